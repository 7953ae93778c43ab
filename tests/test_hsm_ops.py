"""kms_iface.pkcs11.hsm_ops against the real SoftHSM2 token, cross-checked with `cryptography`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from cryptography.hazmat.primitives.asymmetric.rsa import (
    RSAPrivateKey,
    RSAPrivateNumbers,
    RSAPublicNumbers,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms_iface.errors import (
    DECRYPTION_FAILED_MESSAGE,
    ArgumentsBadError,
    DecryptionError,
    HsmError,
    InvalidRequestError,
    MechanismParamInvalidError,
)
from kms_iface.hsm import CryptoAlgorithm, SigningAlgorithm
from kms_iface.pkcs11 import Module, SecretBytes, Session, aes_key_template, hsm_ops
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11.templates import rsa_key_pair_templates

AES_KEY = bytes(range(32))
# A handle no object has: any C call with it fails with a Pkcs11Error, never InvalidRequestError,
# so an InvalidRequestError with this key proves the check ran before any C call.
NO_KEY = 0x7FFF_FFF0


_CRYPT_CALLS = frozenset({"encrypt", "decrypt", "encrypt_into", "decrypt_into", "sign", "verify"})


class Recorder:
    """A real Session seen through a recording proxy: every method called, in order, with the
    input length of the cryptographic calls (-1 for the others). Nothing is faked."""

    def __init__(self, session: Session) -> None:
        self.real = session
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.real, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            size = memoryview(args[2]).nbytes if name in _CRYPT_CALLS else -1
            self.calls.append((name, size))
            return target(*args, **kwargs)

        return call

    @property
    def session(self) -> Session:
        return cast(Session, self)


@pytest.fixture
def recorder(session: Session) -> Recorder:
    return Recorder(session)


@pytest.fixture
def aes(session: Session) -> int:
    """A session AES-256 key imported with a known value (AES_KEY)."""
    return session.create_object(aes_key_template(256, token=False, value=AES_KEY))


class RsaPair:
    def __init__(self, public: int, private: int, key: RSAPrivateKey) -> None:
        self.public = public
        self.private = private
        self.key = key


def _big(value: object) -> int:
    assert isinstance(value, bytes | SecretBytes)
    return int.from_bytes(bytes(value), "big")


@pytest.fixture(scope="module")
def rsa(module: Module, slot: int, token: SoftHsmToken) -> Iterator[RsaPair]:
    """A session RSA-2048 pair (non-sensitive, so `cryptography` gets the private numbers too),
    kept alive by a session of its own for the module's tests."""
    s = module.open_session(slot)
    try:
        s.login(ck.CKU_USER, token.user_pin.encode())
        public, private = s.generate_key_pair(
            ck.CKM_RSA_PKCS_KEY_PAIR_GEN,
            *rsa_key_pair_templates(2048, token=False, sensitive=False, extractable=True),
        )
        n, e, d, p, q, dp, dq, qi = s.get_attributes(
            private,
            [
                ck.CKA_MODULUS,
                ck.CKA_PUBLIC_EXPONENT,
                ck.CKA_PRIVATE_EXPONENT,
                ck.CKA_PRIME_1,
                ck.CKA_PRIME_2,
                ck.CKA_EXPONENT_1,
                ck.CKA_EXPONENT_2,
                ck.CKA_COEFFICIENT,
            ],
        )
        numbers = RSAPrivateNumbers(
            _big(p),
            _big(q),
            _big(d),
            _big(dp),
            _big(dq),
            _big(qi),
            RSAPublicNumbers(_big(e), _big(n)),
        )
        yield RsaPair(public, private, numbers.private_key())
    finally:
        s.close()


def _gcm_failure(session: Session, key: int) -> DecryptionError:
    sealed = hsm_ops.encrypt(session, key, CryptoAlgorithm.AES_GCM, b"x")
    assert sealed.iv is not None and sealed.tag is not None
    bad_tag = bytes([sealed.tag[0] ^ 1]) + sealed.tag[1:]
    with pytest.raises(DecryptionError) as caught:
        hsm_ops.decrypt(
            session, key, CryptoAlgorithm.AES_GCM, sealed.iv + sealed.ciphertext + bad_tag
        )
    return caught.value


def _cbc_raw_encrypt(iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(AES_KEY), modes.CBC(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _cbc_reference(iv: bytes, plaintext: bytes) -> bytes:
    padder = sym_padding.PKCS7(128).padder()
    return _cbc_raw_encrypt(iv, padder.update(plaintext) + padder.finalize())


# -- mechanisms and probe -----------------------------------------------------------------------


def test_algorithms_from_mechanisms(module: Module, slot: int) -> None:
    assert hsm_ops.algorithms_from_mechanisms(module.mechanisms(slot)) == set(CryptoAlgorithm)
    assert hsm_ops.algorithms_from_mechanisms([]) == set()
    assert hsm_ops.algorithms_from_mechanisms([ck.CKM_AES_CBC_PAD, ck.CKM_AES_KEY_GEN]) == set()
    assert hsm_ops.algorithms_from_mechanisms(iter([ck.CKM_AES_GCM, ck.CKM_RSA_PKCS_OAEP])) == {
        CryptoAlgorithm.AES_GCM,
        CryptoAlgorithm.RSA_OAEP_SHA1,
        CryptoAlgorithm.RSA_OAEP_SHA256,
    }
    assert hsm_ops.algorithms_from_mechanisms([ck.CKM_AES_CBC, ck.CKM_RSA_PKCS]) == {
        CryptoAlgorithm.AES_CBC,
        CryptoAlgorithm.RSA_PKCS_V15,
    }


def test_probe_oaep_hashes_softhsm2_has_only_sha1(session: Session) -> None:
    before = set(session.find_objects([]))
    assert hsm_ops.probe_oaep_hashes(session) == {CryptoAlgorithm.RSA_OAEP_SHA1}
    assert set(session.find_objects([])) == before  # the temporary pair is gone
    assert not session.operation_active


def test_rsa_max_input() -> None:
    assert hsm_ops.rsa_max_input(CryptoAlgorithm.RSA_PKCS_V15, 2048) == 245
    assert hsm_ops.rsa_max_input(CryptoAlgorithm.RSA_OAEP_SHA1, 2048) == 214
    assert hsm_ops.rsa_max_input(CryptoAlgorithm.RSA_OAEP_SHA256, 2048) == 190
    assert hsm_ops.rsa_max_input(CryptoAlgorithm.RSA_OAEP_SHA256, 4096) == 446
    assert hsm_ops.rsa_max_input(CryptoAlgorithm.RSA_PKCS_V15, 1023) == 117
    assert hsm_ops.rsa_max_input(CryptoAlgorithm.RSA_OAEP_SHA256, 512) == 0
    with pytest.raises(InvalidRequestError):
        hsm_ops.rsa_max_input(CryptoAlgorithm.AES_GCM, 2048)


# -- AES-GCM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 16, 1000])
@pytest.mark.parametrize("aad", [None, b"", b"header"])
def test_gcm_round_trip_and_cryptography(
    session: Session, aes: int, size: int, aad: bytes | None
) -> None:
    plaintext = os.urandom(size)
    sealed = hsm_ops.encrypt(session, aes, CryptoAlgorithm.AES_GCM, plaintext, aad=aad)
    assert isinstance(sealed.ciphertext, bytes)
    assert sealed.iv is not None and len(sealed.iv) == 12
    assert sealed.tag is not None and len(sealed.tag) == 16
    assert len(sealed.ciphertext) == size
    wire = sealed.iv + sealed.ciphertext + sealed.tag
    assert AESGCM(AES_KEY).decrypt(sealed.iv, sealed.ciphertext + sealed.tag, aad) == plaintext
    opened = hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_GCM, wire, aad=aad)
    assert isinstance(opened, SecretBytes)
    assert opened == plaintext
    # And the other way round: what cryptography seals, the token opens.
    iv = os.urandom(12)
    theirs = iv + AESGCM(AES_KEY).encrypt(iv, plaintext, aad)
    assert hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_GCM, theirs, aad=aad) == plaintext


def test_gcm_accepts_any_buffer(session: Session, aes: int) -> None:
    plaintext = bytearray(b"buffer protocol " * 4)
    sealed = hsm_ops.encrypt(
        session, aes, CryptoAlgorithm.AES_GCM, memoryview(plaintext), aad=bytearray(b"a")
    )
    assert sealed.iv is not None and sealed.tag is not None
    wire = bytearray(sealed.iv + sealed.ciphertext + sealed.tag)
    opened = hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_GCM, wire, aad=memoryview(b"a"))
    assert opened == plaintext
    assert hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_GCM, SecretBytes(wire), aad=b"a") == (
        plaintext
    )
    plaintext.extend(b"resizable again: no buffer export was kept")


def test_gcm_with_an_exported_generated_key(session: Session) -> None:
    key = session.generate_key(
        ck.CKM_AES_KEY_GEN, aes_key_template(128, token=False, sensitive=False, extractable=True)
    )
    (value,) = session.get_attributes(key, [ck.CKA_VALUE])
    assert isinstance(value, SecretBytes)
    sealed = hsm_ops.encrypt(session, key, CryptoAlgorithm.AES_GCM, b"generated")
    assert sealed.iv is not None and sealed.tag is not None
    assert AESGCM(bytes(value)).decrypt(sealed.iv, sealed.ciphertext + sealed.tag, None) == (
        b"generated"
    )


def test_gcm_ivs_are_fresh(session: Session, aes: int) -> None:
    ivs = {hsm_ops.encrypt(session, aes, CryptoAlgorithm.AES_GCM, b"same").iv for _ in range(8)}
    assert len(ivs) == 8


@pytest.mark.parametrize("what", ["aad", "missing aad", "extra aad", "tag", "iv", "ciphertext"])
def test_gcm_tampering_is_one_decryption_error(session: Session, aes: int, what: str) -> None:
    aad = None if what == "extra aad" else b"bound"
    sealed = hsm_ops.encrypt(session, aes, CryptoAlgorithm.AES_GCM, b"secret message", aad=aad)
    assert sealed.iv is not None and sealed.tag is not None
    wire = bytearray(sealed.iv + sealed.ciphertext + sealed.tag)
    given: bytes | None = aad
    if what == "aad":
        given = b"Bound"
    elif what == "missing aad":
        given = None
    elif what == "extra aad":
        given = b"bound"
    else:
        index = {"iv": 0, "ciphertext": 12, "tag": len(wire) - 1}[what]
        wire[index] ^= 0x80
    with pytest.raises(DecryptionError) as caught:
        hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_GCM, wire, aad=given)
    assert caught.value.message == DECRYPTION_FAILED_MESSAGE
    assert caught.value.rv is None and caught.value.rv_name is None
    assert not session.operation_active


@pytest.mark.parametrize("size", [0, 11, 12, 27])
def test_gcm_short_input_is_rejected_before_any_call(recorder: Recorder, size: int) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        hsm_ops.decrypt(recorder.session, NO_KEY, CryptoAlgorithm.AES_GCM, bytes(size))
    assert str(caught.value) == "Invalid Request: Invalid AES GCM ciphertext"
    assert recorder.calls == []


def test_gcm_minimal_input_reaches_the_token(session: Session) -> None:
    # 28 bytes pass the length check, so the (missing) key is what fails.
    with pytest.raises(HsmError) as caught:
        hsm_ops.decrypt(session, NO_KEY, CryptoAlgorithm.AES_GCM, bytes(28))
    assert not isinstance(caught.value, InvalidRequestError)


# -- AES-CBC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 32, 100])
def test_cbc_round_trip_and_cryptography(session: Session, aes: int, size: int) -> None:
    plaintext = os.urandom(size)
    sealed = hsm_ops.encrypt(session, aes, CryptoAlgorithm.AES_CBC, plaintext)
    assert sealed.iv is not None and len(sealed.iv) == 16
    assert sealed.tag is None
    assert len(sealed.ciphertext) == (size // 16 + 1) * 16
    assert sealed.ciphertext == _cbc_reference(sealed.iv, plaintext)
    opened = hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_CBC, sealed.iv + sealed.ciphertext)
    assert isinstance(opened, SecretBytes)
    assert opened == plaintext
    iv = os.urandom(16)
    theirs = iv + _cbc_reference(iv, plaintext)
    assert hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_CBC, theirs) == plaintext


@pytest.mark.parametrize(
    "last_block",
    [
        bytes(16),  # pad byte 0
        bytes(15) + b"\x11",  # pad byte 17
        bytes(15) + b"\xff",  # pad byte 255
        bytes(13) + b"\x03\x02\x03",  # one padding byte differs
        b"\x00" + b"\x10" * 15,  # full-block padding with its first byte wrong
        b"\x0f" * 15 + b"\x10",  # full-block padding with every other byte wrong
        b"A" * 14 + b"\x01\x02",  # pad 2 over a byte of 1
    ],
)
def test_cbc_bad_padding_is_the_same_error_as_a_bad_gcm_tag(
    session: Session, aes: int, last_block: bytes
) -> None:
    gcm_error = _gcm_failure(session, aes)
    iv = os.urandom(16)
    body = _cbc_raw_encrypt(iv, b"B" * 16 + last_block)
    with pytest.raises(DecryptionError) as caught:
        hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_CBC, iv + body)
    assert type(caught.value) is type(gcm_error)
    assert str(caught.value) == str(gcm_error)
    assert caught.value.message == DECRYPTION_FAILED_MESSAGE
    assert (caught.value.rv, caught.value.function) == (gcm_error.rv, gcm_error.function)


@pytest.mark.parametrize("pad", range(1, 17))
def test_cbc_every_valid_padding_length(session: Session, aes: int, pad: int) -> None:
    iv = os.urandom(16)
    plaintext = b"P" * (32 - pad)
    body = _cbc_raw_encrypt(iv, plaintext + bytes([pad]) * pad)
    assert hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_CBC, iv + body) == plaintext


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 33])
def test_cbc_bad_length_is_rejected_before_any_call(recorder: Recorder, size: int) -> None:
    for limit in (None, 1024):
        with pytest.raises(InvalidRequestError) as caught:
            hsm_ops.decrypt(
                recorder.session, NO_KEY, CryptoAlgorithm.AES_CBC, bytes(size), cbc_limit=limit
            )
        assert "Invalid AES CBC ciphertext" in str(caught.value)
    assert recorder.calls == []


def test_one_pass_is_one_call(recorder: Recorder, aes: int) -> None:
    for algorithm in (CryptoAlgorithm.AES_GCM, CryptoAlgorithm.AES_CBC):
        recorder.calls.clear()
        sealed = hsm_ops.encrypt(recorder.session, aes, algorithm, bytes(5000), cbc_limit=None)
        assert recorder.calls == [
            ("encrypt", 5000 if algorithm is CryptoAlgorithm.AES_GCM else 5008)
        ]
        wire = (sealed.iv or b"") + sealed.ciphertext + (sealed.tag or b"")
        recorder.calls.clear()
        assert hsm_ops.decrypt(recorder.session, aes, algorithm, wire) == bytes(5000)
        assert recorder.calls == [("decrypt", len(wire) - (12 if sealed.tag else 16))]


@pytest.mark.parametrize(
    ("limit", "rounds"),
    [(1024, [1024, 1024, 960]), (1000, [992, 992, 992, 32]), (4096, [3008]), (3008, [3008])],
)
def test_cbc_limit_rounds(recorder: Recorder, aes: int, limit: int, rounds: list[int]) -> None:
    plaintext = os.urandom(3000)  # 3008 bytes once padded
    sealed = hsm_ops.encrypt(
        recorder.session, aes, CryptoAlgorithm.AES_CBC, plaintext, cbc_limit=limit
    )
    assert recorder.calls == [("encrypt", n) for n in rounds]
    assert sealed.iv is not None
    recorder.calls.clear()
    opened = hsm_ops.decrypt(
        recorder.session,
        aes,
        CryptoAlgorithm.AES_CBC,
        sealed.iv + sealed.ciphertext,
        cbc_limit=limit,
    )
    assert opened == plaintext
    name = "decrypt" if len(rounds) == 1 else "decrypt_into"
    assert recorder.calls == [(name, n) for n in rounds]


@pytest.mark.parametrize(("limit", "rounded"), [(1024, 1024), (1000, 992), (16, 16), (17, 16)])
@pytest.mark.parametrize("size", [0, 15, 1007, 1023, 1024, 3000, 5000])
def test_cbc_limit_is_bit_identical_to_one_pass(
    session: Session, aes: int, limit: int, rounded: int, size: int
) -> None:
    if limit == 16 or limit == 17:
        size = min(size, 200)  # 16-byte rounds: keep the call count small
    plaintext = os.urandom(size)
    sealed = hsm_ops.encrypt(session, aes, CryptoAlgorithm.AES_CBC, plaintext, cbc_limit=limit)
    assert sealed.iv is not None
    assert sealed.ciphertext == _cbc_reference(sealed.iv, plaintext)
    wire = sealed.iv + sealed.ciphertext
    for decrypt_limit in (None, limit, rounded):
        opened = hsm_ops.decrypt(
            session, aes, CryptoAlgorithm.AES_CBC, wire, cbc_limit=decrypt_limit
        )
        assert opened == plaintext
    iv = os.urandom(16)
    theirs = iv + _cbc_reference(iv, plaintext)
    assert hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_CBC, theirs, cbc_limit=limit) == (
        plaintext
    )


def test_cbc_limit_bad_padding_in_the_last_round(session: Session, aes: int) -> None:
    iv = os.urandom(16)
    body = _cbc_raw_encrypt(iv, os.urandom(2047) + b"\x00")
    with pytest.raises(DecryptionError):
        hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_CBC, iv + body, cbc_limit=1024)


@pytest.mark.parametrize("limit", [0, -16, 15])
def test_cbc_limit_below_a_block_is_refused(session: Session, aes: int, limit: int) -> None:
    with pytest.raises(InvalidRequestError):
        hsm_ops.encrypt(session, aes, CryptoAlgorithm.AES_CBC, b"x", cbc_limit=limit)
    with pytest.raises(InvalidRequestError):
        hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_CBC, bytes(32), cbc_limit=limit)


def test_cbc_limit_is_ignored_by_gcm(session: Session, aes: int) -> None:
    sealed = hsm_ops.encrypt(session, aes, CryptoAlgorithm.AES_GCM, bytes(3000), cbc_limit=1024)
    assert sealed.iv is not None and sealed.tag is not None
    wire = sealed.iv + sealed.ciphertext + sealed.tag
    assert hsm_ops.decrypt(session, aes, CryptoAlgorithm.AES_GCM, wire, cbc_limit=16) == bytes(3000)


@pytest.mark.parametrize(
    "algorithm",
    [
        CryptoAlgorithm.AES_CBC,
        CryptoAlgorithm.RSA_PKCS_V15,
        CryptoAlgorithm.RSA_OAEP_SHA1,
        CryptoAlgorithm.RSA_OAEP_SHA256,
    ],
)
def test_aad_only_with_gcm(session: Session, algorithm: CryptoAlgorithm) -> None:
    with pytest.raises(InvalidRequestError, match="only supported with AES_GCM"):
        hsm_ops.encrypt(session, NO_KEY, algorithm, b"data", aad=b"aad")
    with pytest.raises(InvalidRequestError, match="only supported with AES_GCM"):
        hsm_ops.decrypt(session, NO_KEY, algorithm, bytes(32), aad=b"")


# -- RSA encryption -----------------------------------------------------------------------------


def _oaep(hash_algorithm: hashes.HashAlgorithm) -> asym.OAEP:
    return asym.OAEP(mgf=asym.MGF1(hash_algorithm), algorithm=hash_algorithm, label=None)


@pytest.mark.parametrize("size", [0, 1, 214])
@pytest.mark.parametrize("algorithm", [CryptoAlgorithm.RSA_PKCS_V15, CryptoAlgorithm.RSA_OAEP_SHA1])
def test_rsa_round_trip_and_cryptography(
    session: Session, rsa: RsaPair, algorithm: CryptoAlgorithm, size: int
) -> None:
    scheme = asym.PKCS1v15() if algorithm is CryptoAlgorithm.RSA_PKCS_V15 else _oaep(hashes.SHA1())
    plaintext = os.urandom(size)
    sealed = hsm_ops.encrypt(session, rsa.public, algorithm, plaintext)
    assert sealed.iv is None and sealed.tag is None
    assert len(sealed.ciphertext) == 256
    assert rsa.key.decrypt(sealed.ciphertext, scheme) == plaintext
    opened = hsm_ops.decrypt(session, rsa.private, algorithm, sealed.ciphertext)
    assert isinstance(opened, SecretBytes)
    assert opened == plaintext
    theirs = rsa.key.public_key().encrypt(plaintext, scheme)
    assert hsm_ops.decrypt(session, rsa.private, algorithm, theirs) == plaintext


@pytest.mark.parametrize(
    ("algorithm", "limit"),
    [
        (CryptoAlgorithm.RSA_PKCS_V15, 245),
        (CryptoAlgorithm.RSA_OAEP_SHA1, 214),
        # SoftHSM2 refuses OAEP-SHA256 outright: the InvalidRequestError shows no C_Encrypt ran.
        (CryptoAlgorithm.RSA_OAEP_SHA256, 190),
    ],
)
def test_rsa_input_too_long(
    session: Session, recorder: Recorder, rsa: RsaPair, algorithm: CryptoAlgorithm, limit: int
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        hsm_ops.encrypt(recorder.session, rsa.public, algorithm, bytes(limit + 1))
    assert f"at most {limit} bytes" in str(caught.value)
    assert "2048-bit" in str(caught.value)
    assert recorder.calls == [("get_attributes", -1)]  # one attribute read, no C_Encrypt
    assert not session.operation_active
    if algorithm is not CryptoAlgorithm.RSA_OAEP_SHA256:
        hsm_ops.encrypt(session, rsa.public, algorithm, bytes(limit))


def test_rsa_oaep_sha256_is_refused_by_softhsm2(session: Session, rsa: RsaPair) -> None:
    with pytest.raises((ArgumentsBadError, MechanismParamInvalidError)):
        hsm_ops.encrypt(session, rsa.public, CryptoAlgorithm.RSA_OAEP_SHA256, b"x")


@pytest.mark.parametrize("algorithm", [CryptoAlgorithm.RSA_PKCS_V15, CryptoAlgorithm.RSA_OAEP_SHA1])
def test_rsa_tampered_ciphertext(
    session: Session, rsa: RsaPair, algorithm: CryptoAlgorithm
) -> None:
    sealed = hsm_ops.encrypt(session, rsa.public, algorithm, b"secret")
    wire = bytearray(sealed.ciphertext)
    wire[-1] ^= 1
    with pytest.raises(DecryptionError) as caught:
        hsm_ops.decrypt(session, rsa.private, algorithm, wire)
    assert caught.value.message == DECRYPTION_FAILED_MESSAGE
    with pytest.raises(InvalidRequestError):
        hsm_ops.decrypt(session, NO_KEY, algorithm, b"")


# -- signatures ---------------------------------------------------------------------------------

_HASHES: dict[SigningAlgorithm, hashes.HashAlgorithm] = {
    SigningAlgorithm.SHA1_WITH_RSA: hashes.SHA1(),
    SigningAlgorithm.SHA256_WITH_RSA: hashes.SHA256(),
    SigningAlgorithm.SHA384_WITH_RSA: hashes.SHA384(),
    SigningAlgorithm.SHA512_WITH_RSA: hashes.SHA512(),
    SigningAlgorithm.SHA256_WITH_RSA_PSS: hashes.SHA256(),
    SigningAlgorithm.SHA384_WITH_RSA_PSS: hashes.SHA384(),
    SigningAlgorithm.SHA512_WITH_RSA_PSS: hashes.SHA512(),
}
# DER DigestInfo prefix of SHA-256 (RFC 8017, section 9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def _cryptography_verify(
    rsa: RsaPair, algorithm: SigningAlgorithm, data: bytes, sig: bytes
) -> None:
    public = rsa.key.public_key()
    if algorithm is SigningAlgorithm.RSA_PKCS_V15:
        # The token signed DigestInfo(SHA-256) ‖ hash: exactly a prehashed PKCS#1 v1.5 signature.
        digest = data[len(_SHA256_DIGEST_INFO) :]
        public.verify(sig, digest, asym.PKCS1v15(), asym_utils.Prehashed(hashes.SHA256()))
        return
    hash_algorithm = _HASHES[algorithm]
    if algorithm.name.endswith("_PSS"):
        scheme: asym.AsymmetricPadding = asym.PSS(
            mgf=asym.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size
        )
    else:
        scheme = asym.PKCS1v15()
    public.verify(sig, data, scheme, hash_algorithm)


def _message(algorithm: SigningAlgorithm) -> bytes:
    data = b"message to sign " * 10
    if algorithm is SigningAlgorithm.RSA_PKCS_V15:
        return _SHA256_DIGEST_INFO + hashlib.sha256(data).digest()
    return data


@pytest.mark.parametrize("algorithm", list(SigningAlgorithm))
def test_sign_verify_against_cryptography(
    session: Session, rsa: RsaPair, algorithm: SigningAlgorithm
) -> None:
    data = _message(algorithm)
    signature = hsm_ops.sign(session, rsa.private, algorithm, data)
    assert isinstance(signature, bytes) and len(signature) == 256
    _cryptography_verify(rsa, algorithm, data, signature)
    assert hsm_ops.verify(session, rsa.public, algorithm, data, signature) is True
    assert hsm_ops.verify(session, rsa.public, algorithm, bytearray(data), memoryview(signature))
    # A signature made by cryptography verifies on the token.
    if algorithm is SigningAlgorithm.RSA_PKCS_V15:
        theirs = rsa.key.sign(
            data[len(_SHA256_DIGEST_INFO) :],
            asym.PKCS1v15(),
            asym_utils.Prehashed(hashes.SHA256()),
        )
    elif algorithm.name.endswith("_PSS"):
        h = _HASHES[algorithm]
        theirs = rsa.key.sign(data, asym.PSS(mgf=asym.MGF1(h), salt_length=h.digest_size), h)
    else:
        theirs = rsa.key.sign(data, asym.PKCS1v15(), _HASHES[algorithm])
    assert hsm_ops.verify(session, rsa.public, algorithm, data, theirs) is True


@pytest.mark.parametrize("algorithm", list(SigningAlgorithm))
def test_verify_false_on_tampering(
    session: Session, rsa: RsaPair, algorithm: SigningAlgorithm
) -> None:
    data = _message(algorithm)
    signature = bytearray(hsm_ops.sign(session, rsa.private, algorithm, data))
    signature[10] ^= 0x01
    assert hsm_ops.verify(session, rsa.public, algorithm, data, signature) is False
    good = hsm_ops.sign(session, rsa.private, algorithm, data)
    other = data[:-1] + bytes([data[-1] ^ 1])
    assert hsm_ops.verify(session, rsa.public, algorithm, other, good) is False
    assert hsm_ops.verify(session, rsa.public, algorithm, data, good[:-1]) is False
    assert not session.operation_active


def test_verify_raises_for_other_errors(session: Session) -> None:
    with pytest.raises(HsmError):
        hsm_ops.verify(session, NO_KEY, SigningAlgorithm.SHA256_WITH_RSA, b"data", bytes(256))
