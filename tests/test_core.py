"""The core's operations against the real SoftHSM2 token, checked against `cryptography`."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from typing_extensions import Buffer

from kms_iface import (
    DecryptionError,
    HsmError,
    InvalidRequestError,
    Mechanism,
    Module,
    SecretBytes,
    Session,
)
from kms_iface.errors import (
    KeyTypeInconsistentError,
    MechanismInvalidError,
    MechanismParamInvalidError,
    PinIncorrectError,
    Pkcs11Error,
)
from kms_iface.pkcs11 import Library, aes_key_template, find_keys, rsa_key_pair_templates
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.softhsm import SoftHsmToken

from .conftest import count_objects

MiB = 1024 * 1024


@pytest.fixture
def aes(session: Session) -> tuple[int, bytes]:
    """An exportable 256-bit session key and its value (so results can be checked)."""
    key = session.generate_key(
        ck.CKM_AES_KEY_GEN, aes_key_template(256, token=False, sensitive=False, extractable=True)
    )
    value = session.get_attributes(key, [ck.CKA_VALUE])[0]
    assert isinstance(value, SecretBytes)
    return key, bytes(value)


@pytest.fixture(scope="module")
def rsa_pair(module: Module, slot: int, token: SoftHsmToken) -> tuple[int, int, RSAPublicNumbers]:
    """A session RSA-2048 key pair kept for the module's tests, and its public numbers."""
    s = module.open_session(slot)
    s.login(ck.CKU_USER, token.user_pin.encode())
    public, private = s.generate_key_pair(
        ck.CKM_RSA_PKCS_KEY_PAIR_GEN, *rsa_key_pair_templates(2048, token=False)
    )
    modulus, exponent = s.get_attributes(public, [ck.CKA_MODULUS, ck.CKA_PUBLIC_EXPONENT])
    assert isinstance(modulus, bytes) and isinstance(exponent, bytes)
    numbers = RSAPublicNumbers(int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big"))
    _keepalive.append(s)
    return public, private, numbers


_keepalive: list[Session] = []


# -- introspection ------------------------------------------------------------------------------


def test_library_and_token_info(module: Module, slot: int, token: SoftHsmToken) -> None:
    info = module.info()
    assert info.manufacturer_id == "SoftHSM"
    assert info.cryptoki_version.major == 2
    assert slot in module.slots(token_present=True)
    assert set(module.slots(token_present=True)) <= set(module.slots(token_present=False))
    assert module.token_info(slot).label == token.label
    assert module.slot_info(slot).flags & ck.CKF_TOKEN_PRESENT


def test_mechanisms(module: Module, slot: int) -> None:
    mechanisms = module.mechanisms(slot)
    for needed in (ck.CKM_AES_GCM, ck.CKM_AES_CBC_PAD, ck.CKM_RSA_PKCS_OAEP, ck.CKM_AES_KEY_GEN):
        assert needed in mechanisms
    info = module.mechanism_info(slot, ck.CKM_AES_KEY_GEN)
    assert info.min_key_size <= 16 and info.max_key_size >= 32
    assert info.flags & ck.CKF_GENERATE


def test_same_file_shares_one_library(module: Module, token: SoftHsmToken) -> None:
    real = os.path.realpath(token.module)
    assert real != token.module or os.path.islink(token.module) is False
    with Module(real) as again:
        assert again.library is module.library
    assert not module.closed
    assert module.info().manufacturer_id == "SoftHSM"


def test_symlink_shares_one_library(module: Module, tmp_path: Path, token: SoftHsmToken) -> None:
    link = tmp_path / "alias.so"
    link.symlink_to(token.module)
    with Module(link) as aliased:
        assert aliased.library is module.library


def test_different_modules_coexist(module: Module) -> None:
    opensc = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
    if not os.path.exists(opensc):
        opensc = "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so"
    with Module(opensc) as other:
        assert other.library is not module.library
        assert "OpenSC" in other.info().manufacturer_id
    assert module.info().manufacturer_id == "SoftHSM"


def test_missing_module_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="does not exist"):
        Module(tmp_path / "nope.so")
    not_a_module = tmp_path / "empty.so"
    not_a_module.write_bytes(b"")
    with pytest.raises(HsmError, match="cannot load"):
        Module(not_a_module)


def test_find_slot_unknown_label(module: Module) -> None:
    with pytest.raises(InvalidRequestError, match="no token labelled"):
        module.find_slot("no-such-token")


# -- keys and objects ---------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [128, 192, 256])
@pytest.mark.parametrize("token_object", [False, True])
def test_aes_key_generation(session: Session, bits: int, token_object: bool) -> None:
    key = session.generate_key(
        ck.CKM_AES_KEY_GEN, aes_key_template(bits, token=token_object, label=f"gen-{bits}")
    )
    values = session.get_attributes(
        key, [ck.CKA_VALUE_LEN, ck.CKA_TOKEN, ck.CKA_SENSITIVE, ck.CKA_VALUE, ck.CKA_LABEL]
    )
    assert values == [bits // 8, token_object, True, None, f"gen-{bits}".encode()]
    session.destroy_object(key)


def test_aes_key_length_is_validated(session: Session) -> None:
    with pytest.raises(InvalidRequestError, match="128, 192 or 256"):
        aes_key_template(512)


def test_full_template_control(session: Session) -> None:
    key = session.generate_key(
        ck.CKM_AES_KEY_GEN,
        aes_key_template(128, token=False, extra=[(ck.CKA_ENCRYPT, False), (ck.CKA_ID, b"\x07")]),
    )
    assert session.get_attributes(key, [ck.CKA_ENCRYPT, ck.CKA_ID]) == [False, b"\x07"]
    with pytest.raises(HsmError):
        session.encrypt(Mechanism.aes_gcm(os.urandom(12)), key, b"data")


@pytest.mark.parametrize("bits", [1024, 2048, 3072])
def test_rsa_key_pair_generation(session: Session, bits: int) -> None:
    public, private = session.generate_key_pair(
        ck.CKM_RSA_PKCS_KEY_PAIR_GEN, *rsa_key_pair_templates(bits, token=False)
    )
    assert session.get_attributes(public, [ck.CKA_MODULUS_BITS, ck.CKA_PUBLIC_EXPONENT]) == [
        bits,
        b"\x01\x00\x01",
    ]
    assert session.get_attributes(private, [ck.CKA_PRIVATE_EXPONENT]) == [None]


def test_rsa_key_length_is_validated() -> None:
    with pytest.raises(InvalidRequestError, match="1024, 2048, 3072 or 4096"):
        rsa_key_pair_templates(1000)


def test_import_find_set_destroy(session: Session) -> None:
    value = SecretBytes(os.urandom(32))
    key = session.create_object(
        aes_key_template(
            256, token=False, label="imported", value=value, sensitive=False, extractable=True
        )
    )
    exported = session.get_attributes(key, [ck.CKA_VALUE])[0]
    assert exported == value
    assert find_keys(session, label="imported") == [key]
    session.set_attributes(key, [(ck.CKA_LABEL, "renamed")])
    assert find_keys(session, label="imported") == []
    assert find_keys(session, label="renamed", key_type=ck.CKK_AES) == [key]
    session.destroy_object(key)
    assert find_keys(session, label="renamed") == []


def test_import_value_length_is_validated() -> None:
    with pytest.raises(InvalidRequestError, match="needs 32"):
        aes_key_template(256, value=b"short")


def test_find_objects_in_batches(session: Session) -> None:
    keys = [
        session.create_object(
            aes_key_template(128, token=False, label="batch", value=os.urandom(16))
        )
        for _ in range(70)
    ]
    for batch in (1, 7, 32, 100):
        assert sorted(session.find_objects([(ck.CKA_LABEL, "batch")], batch)) == sorted(keys)
    assert len(session.find_objects([(ck.CKA_LABEL, "batch")], 32, limit=5)) == 5
    with pytest.raises(InvalidRequestError):
        session.find_objects([], 0)
    for key in keys:
        session.destroy_object(key)


def test_template_values_are_validated(session: Session) -> None:
    with pytest.raises(InvalidRequestError, match="CK_ULONG"):
        session.find_objects([(ck.CKA_CLASS, -1)])
    with pytest.raises(InvalidRequestError, match="bytes-like"):
        session.find_objects([(ck.CKA_LABEL, 1.5)])  # type: ignore[list-item]


def test_sensitive_value_is_not_exported(session: Session) -> None:
    key = session.generate_key(ck.CKM_AES_KEY_GEN, aes_key_template(256, token=False))
    assert session.get_attributes(key, [ck.CKA_VALUE, ck.CKA_SENSITIVE]) == [None, True]


# -- AES-GCM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 64, 4096, MiB])
def test_gcm_matches_cryptography(session: Session, aes: tuple[int, bytes], size: int) -> None:
    key, value = aes
    iv, aad, data = os.urandom(12), b"header", os.urandom(size)
    ct = session.encrypt(Mechanism.aes_gcm(iv, aad), key, data)
    assert ct == AESGCM(value).encrypt(iv, data, aad)
    plain = session.decrypt(Mechanism.aes_gcm(iv, aad), key, ct)
    assert isinstance(plain, SecretBytes) and plain == data


@pytest.mark.parametrize("iv_len", [1, 12, 128])
@pytest.mark.parametrize("tag_bits", [32, 96, 104, 128])
def test_gcm_iv_and_tag_lengths(
    session: Session, aes: tuple[int, bytes], iv_len: int, tag_bits: int
) -> None:
    key, value = aes
    iv = os.urandom(iv_len)
    ct = session.encrypt(Mechanism.aes_gcm(iv, tag_bits=tag_bits), key, b"message")
    assert len(ct) == 7 + tag_bits // 8
    if iv_len >= 8:  # the smallest IV `cryptography` (OpenSSL 3) accepts
        full = Cipher(algorithms.AES(value), modes.GCM(iv)).encryptor()
        expected = full.update(b"message") + full.finalize()
        assert ct == expected + full.tag[: tag_bits // 8]
    assert session.decrypt(Mechanism.aes_gcm(iv, tag_bits=tag_bits), key, ct) == b"message"


@pytest.mark.parametrize("iv_len", [0, 129])
def test_gcm_iv_length_out_of_range(iv_len: int) -> None:
    with pytest.raises(InvalidRequestError, match="IV must be 1 to 128 bytes"):
        Mechanism.aes_gcm(b"\x00" * iv_len)


@pytest.mark.parametrize("tag_bits", [0, 8, 100, 136])
def test_gcm_tag_length_out_of_range(tag_bits: int) -> None:
    with pytest.raises(InvalidRequestError, match="tag length"):
        Mechanism.aes_gcm(b"\x00" * 12, tag_bits=tag_bits)


def test_gcm_tampering_is_one_decryption_error(session: Session, aes: tuple[int, bytes]) -> None:
    key, _ = aes
    iv = os.urandom(12)
    ct = session.encrypt(Mechanism.aes_gcm(iv, b"aad"), key, b"attack at dawn")
    tampered = bytearray(ct)
    tampered[-1] ^= 1
    messages = set()
    for mechanism, data in [
        (Mechanism.aes_gcm(iv, b"aad"), bytes(tampered)),
        (Mechanism.aes_gcm(iv, b"AAD"), ct),
        (Mechanism.aes_gcm(os.urandom(12), b"aad"), ct),
    ]:
        with pytest.raises(DecryptionError) as caught:
            session.decrypt(mechanism, key, data)
        assert caught.value.rv is None
        messages.add(str(caught.value))
    assert len(messages) == 1
    assert session.decrypt(Mechanism.aes_gcm(iv, b"aad"), key, ct) == b"attack at dawn"


def test_gcm_short_ciphertext(session: Session, aes: tuple[int, bytes]) -> None:
    with pytest.raises(InvalidRequestError, match="shorter than its 16-byte tag"):
        session.decrypt(Mechanism.aes_gcm(os.urandom(12)), aes[0], b"x" * 15)


# -- AES-CBC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 16, 4095, MiB])
def test_cbc_pad_matches_cryptography(session: Session, aes: tuple[int, bytes], size: int) -> None:
    key, value = aes
    iv, data = os.urandom(16), os.urandom(size)
    ct = session.encrypt(Mechanism.aes_cbc(iv, pad=True), key, data)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    enc = Cipher(algorithms.AES(value), modes.CBC(iv)).encryptor()
    assert ct == enc.update(padded) + enc.finalize()
    assert session.decrypt(Mechanism.aes_cbc(iv, pad=True), key, ct) == data


def test_cbc_without_padding(session: Session, aes: tuple[int, bytes]) -> None:
    key, value = aes
    iv, data = os.urandom(16), os.urandom(64)
    ct = session.encrypt(Mechanism.aes_cbc(iv), key, data)
    enc = Cipher(algorithms.AES(value), modes.CBC(iv)).encryptor()
    assert ct == enc.update(data) + enc.finalize()
    assert session.decrypt(Mechanism.aes_cbc(iv), key, ct) == data
    with pytest.raises(InvalidRequestError, match="multiple of 16"):
        session.encrypt(Mechanism.aes_cbc(iv), key, b"x" * 17)


@pytest.mark.parametrize("length", [0, 15, 17])
def test_cbc_bad_ciphertext_length(session: Session, aes: tuple[int, bytes], length: int) -> None:
    with pytest.raises(InvalidRequestError, match="non-empty multiple of 16"):
        session.decrypt(Mechanism.aes_cbc(os.urandom(16), pad=True), aes[0], b"\x00" * length)


def test_cbc_bad_padding_is_decryption_error(session: Session, aes: tuple[int, bytes]) -> None:
    key, value = aes
    iv = os.urandom(16)
    enc = Cipher(algorithms.AES(value), modes.CBC(iv)).encryptor()
    bad = enc.update(b"\x00" * 15 + b"\x11") + enc.finalize()
    with pytest.raises(DecryptionError):
        session.decrypt(Mechanism.aes_cbc(iv, pad=True), key, bad)


@pytest.mark.parametrize("iv_len", [0, 12, 17])
def test_cbc_iv_length(iv_len: int) -> None:
    with pytest.raises(InvalidRequestError, match="IV must be 16 bytes"):
        Mechanism.aes_cbc(b"\x00" * iv_len, pad=True)


# -- buffers ------------------------------------------------------------------------------------


def test_any_buffer_in_and_caller_buffer_out(session: Session, aes: tuple[int, bytes]) -> None:
    key, value = aes
    iv, data = os.urandom(12), os.urandom(4096)
    with mmap.mmap(-1, len(data)) as mapped:
        mapped[:] = data
        inputs: list[Buffer] = [data, bytearray(data), memoryview(data), mapped]
        for source in inputs:
            out = bytearray(len(data) + 16)
            written = session.encrypt_into(Mechanism.aes_gcm(iv), key, source, out)
            assert written == len(out)
            assert bytes(out) == AESGCM(value).encrypt(iv, data, None)
            back = bytearray(len(out))
            assert session.decrypt_into(Mechanism.aes_gcm(iv), key, memoryview(out), back) == 4096
            assert back[:4096] == data
            with pytest.raises(InvalidRequestError, match="4112 are needed"):
                session.decrypt_into(Mechanism.aes_gcm(iv), key, out, bytearray(4096))


def test_output_buffer_too_small(session: Session, aes: tuple[int, bytes]) -> None:
    key, _ = aes
    with pytest.raises(InvalidRequestError, match="are needed"):
        session.encrypt_into(Mechanism.aes_gcm(os.urandom(12)), key, b"x" * 32, bytearray(40))
    with pytest.raises(BufferError):
        session.encrypt_into(Mechanism.aes_gcm(os.urandom(12)), key, b"x", b"\x00" * 64)
    assert not session.operation_active
    assert len(session.encrypt(Mechanism.aes_gcm(os.urandom(12)), key, b"x")) == 17


def test_failed_decrypt_into_leaves_no_plaintext(session: Session, aes: tuple[int, bytes]) -> None:
    key, _ = aes
    iv = os.urandom(16)
    ct = session.encrypt(Mechanism.aes_cbc(iv, pad=True), key, b"y" * 40)
    out = bytearray(b"\xff" * len(ct))
    tampered = bytearray(ct)
    tampered[-1] ^= 0x55
    with pytest.raises(DecryptionError):
        session.decrypt_into(Mechanism.aes_cbc(iv, pad=True), key, tampered, out)
    assert out == bytearray(len(ct))


# -- multi-part ---------------------------------------------------------------------------------


def test_multipart_cbc_pad_equals_single_shot(session: Session, aes: tuple[int, bytes]) -> None:
    key, _ = aes
    iv, data = os.urandom(16), os.urandom(10_000)
    session.encrypt_init(Mechanism.aes_cbc(iv, pad=True), key)
    parts = [session.encrypt_update(data[i : i + 777]) for i in range(0, len(data), 777)]
    ct = b"".join(parts) + session.encrypt_final()
    assert not session.operation_active
    assert ct == session.encrypt(Mechanism.aes_cbc(iv, pad=True), key, data)
    session.decrypt_init(Mechanism.aes_cbc(iv, pad=True), key)
    out = bytearray(len(ct))
    n = 0
    for i in range(0, len(ct), 1000):
        chunk = session.decrypt_update(ct[i : i + 1000])
        out[n : n + len(chunk)] = memoryview(chunk)
        n += len(chunk)
    last = session.decrypt_final()
    assert bytes(out[:n]) + bytes(last) == data


def test_multipart_gcm(session: Session, aes: tuple[int, bytes]) -> None:
    key, value = aes
    iv, data = os.urandom(12), os.urandom(5000)
    session.encrypt_init(Mechanism.aes_gcm(iv, b"aad"), key)
    ct = b"".join(session.encrypt_update(data[i : i + 1024]) for i in range(0, 5000, 1024))
    ct += session.encrypt_final()
    assert ct == AESGCM(value).encrypt(iv, data, b"aad")
    session.decrypt_init(Mechanism.aes_gcm(iv, b"aad"), key)
    held = [bytes(session.decrypt_update(ct[i : i + 999])) for i in range(0, len(ct), 999)]
    assert b"".join(held) + bytes(session.decrypt_final()) == data


def test_cancel_leaves_session_clean(session: Session, aes: tuple[int, bytes]) -> None:
    key, _ = aes
    for decrypt in (False, True):
        mechanism = Mechanism.aes_gcm(os.urandom(12))
        if decrypt:
            session.decrypt_init(mechanism, key)
            session.decrypt_update(os.urandom(100))
        else:
            session.encrypt_init(mechanism, key)
            session.encrypt_update(os.urandom(100))
        assert session.operation_active
        session.cancel()
        assert not session.operation_active
        assert len(session.encrypt(Mechanism.aes_gcm(os.urandom(12)), key, b"x")) == 17


def test_update_without_init(session: Session) -> None:
    with pytest.raises(InvalidRequestError, match="without a matching"):
        session.encrypt_update(b"data")


# -- RSA ----------------------------------------------------------------------------------------


def _public(numbers: RSAPublicNumbers) -> object:
    return numbers.public_key()


def test_oaep_sha1_decrypts_what_cryptography_encrypts(
    session: Session, rsa_pair: tuple[int, int, RSAPublicNumbers]
) -> None:
    public, private, numbers = rsa_pair
    oaep = asym.OAEP(mgf=asym.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    ct = numbers.public_key().encrypt(b"key bytes", oaep)
    mechanism = Mechanism.rsa_oaep(ck.CKM_SHA_1, ck.CKG_MGF1_SHA1)
    assert session.decrypt(mechanism, private, ct) == b"key bytes"
    ct2 = session.encrypt(mechanism, public, b"round trip")
    assert len(ct2) == 256
    assert session.decrypt(mechanism, private, ct2) == b"round trip"


def test_oaep_sha256_is_refused_by_softhsm(
    session: Session, rsa_pair: tuple[int, int, RSAPublicNumbers]
) -> None:
    public, _, _ = rsa_pair
    with pytest.raises(Pkcs11Error) as caught:
        session.encrypt(Mechanism.rsa_oaep(ck.CKM_SHA256, ck.CKG_MGF1_SHA256), public, b"x")
    assert caught.value.rv in (0x7, 0x71)


def test_rsa_pkcs1_v15_round_trip(
    session: Session, rsa_pair: tuple[int, int, RSAPublicNumbers]
) -> None:
    public, private, numbers = rsa_pair
    ct = numbers.public_key().encrypt(b"legacy", asym.PKCS1v15())
    assert session.decrypt(Mechanism(ck.CKM_RSA_PKCS), private, ct) == b"legacy"
    with pytest.raises(HsmError):
        session.encrypt(Mechanism(ck.CKM_RSA_PKCS), public, b"x" * 300)


@pytest.mark.parametrize(
    ("mechanism", "digest"),
    [
        (ck.CKM_SHA1_RSA_PKCS, hashes.SHA1()),
        (ck.CKM_SHA256_RSA_PKCS, hashes.SHA256()),
        (ck.CKM_SHA384_RSA_PKCS, hashes.SHA384()),
        (ck.CKM_SHA512_RSA_PKCS, hashes.SHA512()),
    ],
)
def test_pkcs1_signatures(
    session: Session,
    rsa_pair: tuple[int, int, RSAPublicNumbers],
    mechanism: int,
    digest: hashes.HashAlgorithm,
) -> None:
    public, private, numbers = rsa_pair
    signature = session.sign(mechanism, private, b"message")
    numbers.public_key().verify(signature, b"message", asym.PKCS1v15(), digest)
    assert session.verify(mechanism, public, b"message", signature)
    assert not session.verify(mechanism, public, b"massage", signature)
    assert not session.verify(mechanism, public, b"message", signature[:-1])


def test_raw_pkcs1_and_pss_signatures(
    session: Session, rsa_pair: tuple[int, int, RSAPublicNumbers]
) -> None:
    public, private, numbers = rsa_pair
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
    h = hashes.Hash(hashes.SHA256())
    h.update(b"message")
    signature = session.sign(ck.CKM_RSA_PKCS, private, digest_info + h.finalize())
    numbers.public_key().verify(signature, b"message", asym.PKCS1v15(), hashes.SHA256())
    pss = Mechanism.rsa_pss(ck.CKM_SHA256, ck.CKG_MGF1_SHA256, 32, ck.CKM_SHA256_RSA_PKCS_PSS)
    signature = session.sign(pss, private, b"message")
    numbers.public_key().verify(
        signature, b"message", asym.PSS(asym.MGF1(hashes.SHA256()), 32), hashes.SHA256()
    )
    assert session.verify(pss, public, b"message", signature)


# -- wrapping, random ---------------------------------------------------------------------------


def test_aes_key_wrap_and_rsa_oaep_wrap(
    session: Session, rsa_pair: tuple[int, int, RSAPublicNumbers]
) -> None:
    public, private, _ = rsa_pair
    kek = session.generate_key(ck.CKM_AES_KEY_GEN, aes_key_template(256, token=False))
    target = session.generate_key(
        ck.CKM_AES_KEY_GEN, aes_key_template(256, token=False, extractable=True)
    )
    unwrap_template = aes_key_template(256, token=False)
    unwrap_template = [(k, v) for k, v in unwrap_template if k != ck.CKA_VALUE_LEN]
    iv = os.urandom(12)
    reference = session.encrypt(Mechanism.aes_gcm(iv), target, b"probe")
    oaep = Mechanism.rsa_oaep(ck.CKM_SHA_1, ck.CKG_MGF1_SHA1)
    for mechanism, wrapper, unwrapper in [
        (Mechanism(ck.CKM_AES_KEY_WRAP), kek, kek),
        (Mechanism(ck.CKM_AES_KEY_WRAP_PAD), kek, kek),
        (oaep, public, private),
    ]:
        wrapped = session.wrap_key(mechanism, wrapper, target)
        copy = session.unwrap_key(mechanism, unwrapper, wrapped, unwrap_template)
        assert session.encrypt(Mechanism.aes_gcm(iv), copy, b"probe") == reference


def test_random(session: Session) -> None:
    assert len(session.generate_random(48)) == 48
    assert session.generate_random(0) == b""
    assert session.generate_random(32) != session.generate_random(32)
    session.seed_random(b"extra entropy")
    session.seed_random(b"")
    with pytest.raises(InvalidRequestError):
        session.generate_random(-1)


# -- failures leave the token unchanged ---------------------------------------------------------


def test_wrong_pin(module: Module, spare_token: SoftHsmToken) -> None:
    slot = module.find_slot(spare_token.label)
    before = count_objects(module, slot, spare_token.user_pin)
    s = module.open_session(slot)
    try:
        with pytest.raises(PinIncorrectError) as caught:
            s.login(ck.CKU_USER, b"0000")
        assert caught.value.rv == 0xA0
        assert caught.value.function == "C_Login"
        assert "0000" not in str(caught.value)
        assert s.login(ck.CKU_USER, spare_token.user_pin.encode())
    finally:
        s.close()
    assert count_objects(module, slot, spare_token.user_pin) == before


def test_wrong_key_type(
    module: Module,
    slot: int,
    token: SoftHsmToken,
    session: Session,
    rsa_pair: tuple[int, int, RSAPublicNumbers],
) -> None:
    before = count_objects(module, slot, token.user_pin)
    public, _, _ = rsa_pair
    with pytest.raises(KeyTypeInconsistentError) as caught:
        session.encrypt(Mechanism.aes_gcm(os.urandom(12)), public, b"data")
    assert str(caught.value) == (
        "HSM Error: C_EncryptInit failed: CKR_KEY_TYPE_INCONSISTENT (0x63)"
    )
    assert not session.operation_active
    assert count_objects(module, slot, token.user_pin) == before


def test_bad_mechanism_parameter(session: Session, aes: tuple[int, bytes]) -> None:
    with pytest.raises((MechanismParamInvalidError, MechanismInvalidError)):
        session.encrypt(Mechanism(ck.CKM_AES_CBC_PAD, b"\x00" * 3), aes[0], b"data")


def test_closed_session_raises_typed_error(module: Module, slot: int) -> None:
    s = module.open_session(slot)
    s.close()
    s.close()
    with pytest.raises(HsmError, match="CKR_SESSION_CLOSED"):
        s.get_info()


def test_already_initialized_is_tolerated_and_not_finalized(module: Module) -> None:
    second = Library(module.library.path)
    assert second.initialize() is False
    assert second.get_info().manufacturer_id == "SoftHSM"
    second.close()
    assert module.info().manufacturer_id == "SoftHSM"


def test_last_close_finalizes(token: SoftHsmToken) -> None:
    script = (
        "from kms_iface.pkcs11 import Module\n"
        f"a = Module({token.module!r}); b = Module({token.module!r}); lib = a.library\n"
        "a.close(); a.close(); assert lib.initialized and not b.closed\n"
        "b.close(); assert not lib.initialized and b.closed\n"
        "c = Module(lib.path); assert c.library is not lib and c.library.initialized\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_exported_key_buffer_can_be_wiped(session: Session, aes: tuple[int, bytes]) -> None:
    key, value = aes
    exported = session.get_attributes(key, [ck.CKA_VALUE])[0]
    assert isinstance(exported, SecretBytes) and exported == value
    view = memoryview(exported)
    exported.zeroize()
    assert bytes(view) == bytes(32)
