"""HsmEncryptionOracle over any HSM: uid parsing, default algorithms, redirects, AAD, signing.

The behaviour tests run against two HSMs: ``Pkcs11Hsm`` on the SoftHSM2 test token (the real
one) and ``SoftwareHsm`` below, a small in-memory HSM over the ``cryptography`` package that only
exists to exercise the oracle's rules (and lets a test restrict the supported algorithms or look
at the calls the oracle made).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms_iface import DecryptionError, InvalidRequestError, NotSupportedError, SecretBytes
from kms_iface.config import hsm_prefixes, parse_config
from kms_iface.hsm import (
    HSM,
    AesKeyMaterial,
    CryptoAlgorithm,
    EncryptedContent,
    HsmKeyAlgorithm,
    HsmKeypairAlgorithm,
    HsmObject,
    HsmObjectFilter,
    KeyId,
    KeyMetadata,
    KeyType,
    RsaPublicKeyMaterial,
    SigningAlgorithm,
)
from kms_iface.hsm_oracle import HsmEncryptionOracle, hsm_uid, parse_hsm_uid
from kms_iface.kmip.attributes import CryptographicParameters
from kms_iface.kmip.enums import (
    CryptographicAlgorithm,
    DigitalSignatureAlgorithm,
    HashingAlgorithm,
    PaddingMethod,
)
from kms_iface.oracle import CryptoOracle
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11_hsm import Pkcs11Hsm

pytestmark = pytest.mark.anyio

ALL_ALGORITHMS = list(CryptoAlgorithm)
Buffer = bytes | bytearray | memoryview


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --------------------------------------------------------------------------------------------
# A software HSM (cryptography), for the rules only
# --------------------------------------------------------------------------------------------

_HASHES: dict[SigningAlgorithm, hashes.HashAlgorithm] = {
    SigningAlgorithm.SHA1_WITH_RSA: hashes.SHA1(),
    SigningAlgorithm.SHA256_WITH_RSA: hashes.SHA256(),
    SigningAlgorithm.SHA384_WITH_RSA: hashes.SHA384(),
    SigningAlgorithm.SHA512_WITH_RSA: hashes.SHA512(),
    SigningAlgorithm.SHA256_WITH_RSA_PSS: hashes.SHA256(),
    SigningAlgorithm.SHA384_WITH_RSA_PSS: hashes.SHA384(),
    SigningAlgorithm.SHA512_WITH_RSA_PSS: hashes.SHA512(),
}


@dataclass
class _Key:
    key_type: KeyType
    value: Any  # bytes (AES), RSAPrivateKey, RSAPublicKey


class SoftwareHsm(HSM):
    """In-memory keys per slot; records ``(method, slot, key_id, algorithm, aad)`` calls."""

    def __init__(self, slots: Iterable[int], supported: Iterable[CryptoAlgorithm] = ALL_ALGORITHMS):
        self.keys: dict[int, dict[str, _Key]] = {slot: {} for slot in slots}
        self.supported = list(supported)
        self.calls: list[tuple[Any, ...]] = []

    def _slot(self, slot_id: int) -> dict[str, _Key]:
        if slot_id not in self.keys:
            raise InvalidRequestError(f"slot {slot_id} is not accessible")
        return self.keys[slot_id]

    def _find(self, slot_id: int, key_id: KeyId) -> _Key | None:
        text = key_id.decode() if isinstance(key_id, bytes) else key_id
        return self._slot(slot_id).get(text)

    def _need(self, slot_id: int, key_id: KeyId) -> _Key:
        key = self._find(slot_id, key_id)
        if key is None:
            raise InvalidRequestError("Object not found")
        return key

    async def aclose(self) -> None:
        pass

    async def get_available_slot_list(self) -> list[int]:
        return list(self.keys)

    async def get_supported_algorithms(self, slot_id: int) -> list[CryptoAlgorithm]:
        self._slot(slot_id)
        self.calls.append(("get_supported_algorithms", slot_id))
        return list(self.supported)

    async def create_key(
        self,
        slot_id: int,
        id: KeyId,
        algorithm: HsmKeyAlgorithm,
        key_length_in_bits: int,
        sensitive: bool,
    ) -> None:
        self._slot(slot_id)[str(id)] = _Key(KeyType.AES_KEY, os.urandom(key_length_in_bits // 8))

    async def create_keypair(
        self,
        slot_id: int,
        sk_id: KeyId,
        pk_id: KeyId,
        algorithm: HsmKeypairAlgorithm,
        key_length_in_bits: int,
        sensitive: bool,
    ) -> None:
        private = rsa.generate_private_key(65537, key_length_in_bits)
        self._slot(slot_id)[str(sk_id)] = _Key(KeyType.RSA_PRIVATE_KEY, private)
        self._slot(slot_id)[str(pk_id)] = _Key(KeyType.RSA_PUBLIC_KEY, private.public_key())

    async def export(self, slot_id: int, object_id: KeyId) -> HsmObject | None:
        key = self._find(slot_id, object_id)
        if key is None:
            return None
        if key.key_type is KeyType.AES_KEY:
            return HsmObject(AesKeyMaterial(SecretBytes(key.value)), str(object_id))
        if key.key_type is KeyType.RSA_PUBLIC_KEY:
            numbers = key.value.public_numbers()
            return HsmObject(
                RsaPublicKeyMaterial(_big_endian(numbers.n), _big_endian(numbers.e)),
                str(object_id),
            )
        raise NotSupportedError("private key export is not needed by these tests")

    async def delete(self, slot_id: int, object_id: KeyId) -> None:
        text = object_id.decode() if isinstance(object_id, bytes) else object_id
        if self._slot(slot_id).pop(text, None) is None:
            raise InvalidRequestError("Object not found")

    async def find(self, slot_id: int, object_filter: HsmObjectFilter) -> list[bytes]:
        return [key_id.encode() for key_id in self._slot(slot_id)]

    async def encrypt(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptoAlgorithm,
        data: Buffer,
        *,
        aad: bytes | None = None,
    ) -> EncryptedContent:
        self.calls.append(("encrypt", slot_id, key_id, algorithm, aad))
        key = self._need(slot_id, key_id)
        data = bytes(data)
        if algorithm is CryptoAlgorithm.AES_GCM:
            iv = os.urandom(12)
            sealed = AESGCM(key.value).encrypt(iv, data, aad)
            return EncryptedContent(sealed[:-16], iv, sealed[-16:])
        if aad is not None:
            raise InvalidRequestError("aad is only for AES_GCM")
        if algorithm is CryptoAlgorithm.AES_CBC:
            iv = os.urandom(16)
            padder = sym_padding.PKCS7(128).padder()
            padded = padder.update(data) + padder.finalize()
            encryptor = Cipher(algorithms.AES(key.value), modes.CBC(iv)).encryptor()
            return EncryptedContent(encryptor.update(padded) + encryptor.finalize(), iv)
        if key.key_type is not KeyType.RSA_PUBLIC_KEY:
            raise InvalidRequestError("RSA encryption needs the public key")
        return EncryptedContent(key.value.encrypt(data, _rsa_padding(algorithm)))

    async def decrypt(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptoAlgorithm,
        data: Buffer,
        *,
        aad: bytes | None = None,
    ) -> SecretBytes:
        self.calls.append(("decrypt", slot_id, key_id, algorithm, aad))
        key = self._need(slot_id, key_id)
        data = bytes(data)
        if algorithm is CryptoAlgorithm.AES_GCM:
            try:
                return SecretBytes(AESGCM(key.value).decrypt(data[:12], data[12:], aad))
            except InvalidTag:
                raise DecryptionError() from None
        if algorithm is CryptoAlgorithm.AES_CBC:
            decryptor = Cipher(algorithms.AES(key.value), modes.CBC(data[:16])).decryptor()
            unpadder = sym_padding.PKCS7(128).unpadder()
            try:
                padded = decryptor.update(data[16:]) + decryptor.finalize()
                return SecretBytes(unpadder.update(padded) + unpadder.finalize())
            except ValueError:
                raise DecryptionError() from None
        if key.key_type is not KeyType.RSA_PRIVATE_KEY:
            raise InvalidRequestError("RSA decryption needs the private key")
        return SecretBytes(key.value.decrypt(data, _rsa_padding(algorithm)))

    async def get_key_type(self, slot_id: int, key_id: KeyId) -> KeyType | None:
        self.calls.append(("get_key_type", slot_id, key_id))
        key = self._find(slot_id, key_id)
        return None if key is None else key.key_type

    async def get_key_metadata(self, slot_id: int, key_id: KeyId) -> KeyMetadata | None:
        key = self._find(slot_id, key_id)
        if key is None:
            return None
        bits = len(key.value) * 8 if key.key_type is KeyType.AES_KEY else key.value.key_size
        return KeyMetadata(key.key_type, bits, False, str(key_id))

    async def sign(
        self, slot_id: int, key_id: KeyId, algorithm: SigningAlgorithm, data: Buffer
    ) -> bytes:
        self.calls.append(("sign", slot_id, key_id, algorithm))
        key = self._need(slot_id, key_id)
        digest = _HASHES[algorithm]
        signature: bytes = key.value.sign(bytes(data), _sig_padding(algorithm), digest)
        return signature

    async def verify(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: SigningAlgorithm,
        data: Buffer,
        signature: Buffer,
    ) -> bool:
        self.calls.append(("verify", slot_id, key_id, algorithm))
        key = self._need(slot_id, key_id)
        public = key.value.public_key() if key.key_type is KeyType.RSA_PRIVATE_KEY else key.value
        try:
            public.verify(
                bytes(signature), bytes(data), _sig_padding(algorithm), _HASHES[algorithm]
            )
        except InvalidSignature:
            return False
        return True

    async def generate_random(self, slot_id: int, length: int) -> bytes:
        return os.urandom(length)

    async def seed_random(self, slot_id: int, seed: Buffer) -> None:
        pass

    async def set_key_dates(
        self,
        slot_id: int,
        key_id: KeyId,
        start_date: datetime.date | None,
        end_date: datetime.date | None,
    ) -> None:
        raise NotSupportedError("not needed by these tests")

    async def set_key_label(self, slot_id: int, key_id: KeyId, label: str) -> None:
        raise NotSupportedError("not needed by these tests")


def _big_endian(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _rsa_padding(algorithm: CryptoAlgorithm) -> padding.AsymmetricPadding:
    if algorithm is CryptoAlgorithm.RSA_PKCS_V15:
        return padding.PKCS1v15()
    digest = hashes.SHA1() if algorithm is CryptoAlgorithm.RSA_OAEP_SHA1 else hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def _sig_padding(algorithm: SigningAlgorithm) -> padding.AsymmetricPadding:
    if algorithm.name.endswith("_PSS"):
        digest = _HASHES[algorithm]
        return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    return padding.PKCS1v15()


# --------------------------------------------------------------------------------------------
# Fixtures: the same bench over either HSM
# --------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """An HSM, its slot, an oracle over it, and the ids to delete afterwards."""

    hsm: HSM
    slot: int
    oracle: HsmEncryptionOracle
    created: list[str] = field(default_factory=list)

    def uid(self, key_id: str) -> str:
        return hsm_uid(self.oracle.prefix, self.slot, key_id)

    async def aes(self, bits: int = 256, key_id: str | None = None) -> str:
        key_id = key_id or f"oracle-aes-{uuid.uuid4().hex[:12]}"
        await self.hsm.create_key(self.slot, key_id, HsmKeyAlgorithm.AES, bits, False)
        self.created.append(key_id)
        return self.uid(key_id)

    async def rsa(self, bits: int = 2048) -> str:
        key_id = f"oracle-rsa-{uuid.uuid4().hex[:12]}"
        await self.hsm.create_keypair(
            self.slot, key_id, key_id + "_pk", HsmKeypairAlgorithm.RSA, bits, False
        )
        self.created += [key_id + "_pk", key_id]
        return self.uid(key_id)

    async def cleanup(self) -> None:
        for key_id in self.created:
            with contextlib.suppress(InvalidRequestError):  # already deleted by the test
                await self.hsm.delete(self.slot, key_id)


@pytest.fixture(params=["software", "softhsm2"])
async def bench(
    request: pytest.FixtureRequest, anyio_backend: str, token: SoftHsmToken, slot: int
) -> AsyncIterator[Bench]:
    hsm: HSM
    if request.param == "software":
        hsm = SoftwareHsm([slot])
    else:
        hsm = Pkcs11Hsm(token.module, {slot: token.user_pin}, profile="softhsm2")
    async with hsm:
        b = Bench(hsm, slot, HsmEncryptionOracle(hsm, "hsm"))
        try:
            yield b
        finally:
            await b.cleanup()


@pytest.fixture
async def soft(anyio_backend: str) -> SoftwareHsm:
    return SoftwareHsm([0, 7])


# --------------------------------------------------------------------------------------------
# uid parsing (no HSM)
# --------------------------------------------------------------------------------------------

FORM = (
    "Invalid Request: An HSM request must have a uid in the form of "
    "'{prefix}::<slot_id>::<key_id>', got: {uid}"
)
SLOT = "Invalid Request: The slot_id must be a valid unsigned integer: {reason}"


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        ("hsm::0::k", (0, "k")),
        ("hsm::12::a::b::c", (12, "a::b::c")),
        ("hsm::3::k::", (3, "k::")),
        ("hsm::+4::k", (4, "k")),  # Rust's usize parser accepts a leading '+'
        ("hsm::007::k", (7, "k")),
        ("hsm::0:: spaced id ", (0, " spaced id ")),
        ("hsm::18446744073709551615::k", (2**64 - 1, "k")),
    ],
)
async def test_parse_uid(uid: str, expected: tuple[int, str]) -> None:
    assert parse_hsm_uid(uid, "hsm") == expected


@pytest.mark.parametrize(
    "uid",
    ["", "hsm", "hsm::", "hsm::0", "hsm::0::", "hsmx::0::k", "other::0::k", "0::k", "HSM::0::k"],
)
async def test_uid_form_errors(uid: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_hsm_uid(uid, "hsm")
    assert str(info.value) == FORM.format(prefix="hsm", uid=uid)


@pytest.mark.parametrize(
    ("slot", "reason"),
    [
        ("", "cannot parse integer from empty string"),
        ("x", "invalid digit found in string"),
        ("-1", "invalid digit found in string"),
        ("+", "invalid digit found in string"),
        (" 1", "invalid digit found in string"),
        ("1_0", "invalid digit found in string"),
        ("\u0661", "invalid digit found in string"),  # ARABIC-INDIC DIGIT ONE
        ("18446744073709551616", "number too large to fit in target type"),
    ],
)
async def test_slot_errors(slot: str, reason: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_hsm_uid(f"hsm::{slot}::k", "hsm")
    assert str(info.value) == SLOT.format(reason=reason)


async def test_model_prefix() -> None:
    assert parse_hsm_uid("hsm::utimaco_1::2::k", "hsm::utimaco_1") == (2, "k")
    with pytest.raises(InvalidRequestError) as info:
        parse_hsm_uid("hsm::2::k", "hsm::utimaco_1")
    assert str(info.value) == FORM.format(prefix="hsm::utimaco_1", uid="hsm::2::k")
    assert hsm_uid("hsm::utimaco_1", 2, "a::b") == "hsm::utimaco_1::2::a::b"


async def test_every_method_parses_the_uid(soft: SoftwareHsm) -> None:
    oracle = HsmEncryptionOracle(soft, "hsm")
    assert isinstance(oracle, CryptoOracle)
    assert oracle.hsm is soft and oracle.prefix == "hsm"
    assert "prefix='hsm'" in repr(oracle)
    calls = [
        oracle.encrypt("bad", b""),
        oracle.decrypt("bad", b""),
        oracle.get_key_type("bad"),
        oracle.get_key_metadata("bad"),
        oracle.sign("bad", b""),
        oracle.signature_verify("bad", b"", b""),
    ]
    for call in calls:
        with pytest.raises(InvalidRequestError, match="in the form of 'hsm::<slot_id>::<key_id>'"):
            await call
    assert soft.calls == []


# --------------------------------------------------------------------------------------------
# Behaviour, on both HSMs
# --------------------------------------------------------------------------------------------


async def _supported(bench: Bench) -> list[CryptoAlgorithm]:
    return await bench.hsm.get_supported_algorithms(bench.slot)


async def test_aes_default_is_gcm_and_round_trips(bench: Bench) -> None:
    assert CryptoAlgorithm.get_aes_algorithm(await _supported(bench)) is CryptoAlgorithm.AES_GCM
    uid = await bench.aes()
    sealed = await bench.oracle.encrypt(uid, b"attack at dawn")
    assert sealed.iv is not None and len(sealed.iv) == 12
    assert sealed.tag is not None and len(sealed.tag) == 16
    assert len(sealed.ciphertext) == len(b"attack at dawn")
    plain = await bench.oracle.decrypt(uid, sealed.iv + sealed.ciphertext + sealed.tag)
    assert isinstance(plain, SecretBytes)
    assert plain == b"attack at dawn"


async def test_default_gcm_is_standard_aes_gcm(bench: Bench) -> None:
    """The default output is plain AES-GCM without AAD: byte-compatible with Cosmian."""
    uid = await bench.aes(key_id=f"oracle-export-{uuid.uuid4().hex[:8]}")
    _, key_id = bench.oracle.parse_uid(uid)
    exported = await bench.hsm.export(bench.slot, key_id)
    assert exported is not None and isinstance(exported.key_material, AesKeyMaterial)
    key = bytes(exported.key_material.key)
    sealed = await bench.oracle.encrypt(uid, b"interop")
    assert sealed.iv is not None and sealed.tag is not None
    assert AESGCM(key).decrypt(sealed.iv, sealed.ciphertext + sealed.tag, None) == b"interop"
    iv = os.urandom(12)
    theirs = AESGCM(key).encrypt(iv, b"from elsewhere", None)
    assert await bench.oracle.decrypt(uid, iv + theirs) == b"from elsewhere"


async def test_explicit_cbc(bench: Bench) -> None:
    uid = await bench.aes(128)
    sealed = await bench.oracle.encrypt(uid, b"0123456789abcdef", CryptoAlgorithm.AES_CBC)
    assert sealed.iv is not None and len(sealed.iv) == 16 and sealed.tag is None
    assert len(sealed.ciphertext) == 32  # an aligned plaintext gains a whole block
    plain = await bench.oracle.decrypt(uid, sealed.iv + sealed.ciphertext, CryptoAlgorithm.AES_CBC)
    assert plain == b"0123456789abcdef"


async def test_aad_with_gcm(bench: Bench) -> None:
    uid = await bench.aes()
    sealed = await bench.oracle.encrypt(uid, b"payload", None, b"header")
    assert sealed.iv is not None and sealed.tag is not None
    wrapped = sealed.iv + sealed.ciphertext + sealed.tag
    assert await bench.oracle.decrypt(uid, wrapped, None, b"header") == b"payload"
    assert (
        await bench.oracle.decrypt(uid, wrapped, CryptoAlgorithm.AES_GCM, b"header") == b"payload"
    )
    with pytest.raises(DecryptionError):
        await bench.oracle.decrypt(uid, wrapped)
    with pytest.raises(DecryptionError):
        await bench.oracle.decrypt(uid, wrapped, None, b"other header")


async def test_aad_refused_unless_gcm(bench: Bench) -> None:
    aes, rsa_uid = await bench.aes(), await bench.rsa()
    message = "Additional authenticated data are only supported with AES_GCM, not {}"
    with pytest.raises(InvalidRequestError, match=message.format("AES_CBC")):
        await bench.oracle.encrypt(aes, b"x", CryptoAlgorithm.AES_CBC, b"aad")
    with pytest.raises(InvalidRequestError, match=message.format("AES_CBC")):
        await bench.oracle.decrypt(aes, bytes(32), CryptoAlgorithm.AES_CBC, b"aad")
    with pytest.raises(InvalidRequestError, match=message.format("RSA_")):
        await bench.oracle.encrypt(rsa_uid, b"x", None, b"aad")
    with pytest.raises(InvalidRequestError, match=message.format("RSA_")):
        await bench.oracle.decrypt(rsa_uid, bytes(256), None, b"aad")
    # Empty AAD is no AAD.
    sealed = await bench.oracle.encrypt(aes, b"x", CryptoAlgorithm.AES_CBC, b"")
    assert sealed.iv is not None
    assert (
        await bench.oracle.decrypt(aes, sealed.iv + sealed.ciphertext, CryptoAlgorithm.AES_CBC, b"")
        == b"x"
    )


async def test_rsa_private_uid_encrypts_with_its_public_key(bench: Bench) -> None:
    sk = await bench.rsa()
    expected = CryptoAlgorithm.get_rsa_algorithm(await _supported(bench))
    sealed = await bench.oracle.encrypt(sk, b"key material")
    assert len(sealed.ciphertext) == 256 and sealed.iv is None and sealed.tag is None
    assert await bench.oracle.decrypt(sk, sealed.ciphertext) == b"key material"
    assert await bench.oracle.decrypt(sk, sealed.ciphertext, expected) == b"key material"
    by_public = await bench.oracle.encrypt(sk + "_pk", b"direct")
    assert await bench.oracle.decrypt(sk, by_public.ciphertext) == b"direct"


async def test_explicit_rsa_algorithm_also_redirects(bench: Bench) -> None:
    sk = await bench.rsa()
    for algorithm in (CryptoAlgorithm.RSA_OAEP_SHA1, CryptoAlgorithm.RSA_PKCS_V15):
        sealed = await bench.oracle.encrypt(sk, b"abc", algorithm)
        assert await bench.oracle.decrypt(sk, sealed.ciphertext, algorithm) == b"abc"


async def test_private_key_without_public_key(bench: Bench) -> None:
    sk = await bench.rsa()
    _, key_id = bench.oracle.parse_uid(sk)
    await bench.hsm.delete(bench.slot, key_id + "_pk")
    expected = f"The key {sk} is a private key, but no public key {sk}_pk is available"
    for algorithm in (None, CryptoAlgorithm.RSA_OAEP_SHA1):
        with pytest.raises(InvalidRequestError) as info:
            await bench.oracle.encrypt(sk, b"x", algorithm)
        assert info.value.message == expected


async def test_rsa_public_key_cannot_decrypt(bench: Bench) -> None:
    pk = await bench.rsa() + "_pk"
    for algorithm in (None, CryptoAlgorithm.RSA_OAEP_SHA1):
        with pytest.raises(InvalidRequestError) as info:
            await bench.oracle.decrypt(pk, bytes(256), algorithm)
        assert str(info.value) == "Invalid Request: An RSA public key cannot be used to decrypt"


async def test_unknown_key(bench: Bench) -> None:
    uid = bench.uid(f"missing-{uuid.uuid4().hex}")
    for call in (bench.oracle.encrypt(uid, b"x"), bench.oracle.decrypt(uid, bytes(64))):
        with pytest.raises(InvalidRequestError) as info:
            await call
        assert info.value.message == f"The key type of key: {uid}, cannot be determined"
    with pytest.raises(InvalidRequestError, match="Object not found"):
        await bench.oracle.encrypt(uid, b"x", CryptoAlgorithm.AES_GCM)
    assert await bench.oracle.get_key_type(uid) is None
    assert await bench.oracle.get_key_metadata(uid) is None


async def test_unconfigured_slot(bench: Bench) -> None:
    uid = hsm_uid("hsm", bench.slot + 1000, "k")
    with pytest.raises(InvalidRequestError, match=f"slot {bench.slot + 1000} is not accessible"):
        await bench.oracle.encrypt(uid, b"x")


async def test_key_type_and_metadata(bench: Bench) -> None:
    aes, sk = await bench.aes(128), await bench.rsa()
    assert await bench.oracle.get_key_type(aes) is KeyType.AES_KEY
    assert await bench.oracle.get_key_type(sk) is KeyType.RSA_PRIVATE_KEY
    assert await bench.oracle.get_key_type(sk + "_pk") is KeyType.RSA_PUBLIC_KEY
    metadata = await bench.oracle.get_key_metadata(aes)
    assert metadata is not None
    assert (metadata.key_type, metadata.key_length_in_bits) == (KeyType.AES_KEY, 128)
    assert metadata.id == bench.oracle.parse_uid(aes)[1]
    rsa_metadata = await bench.oracle.get_key_metadata(sk)
    assert rsa_metadata is not None and rsa_metadata.key_length_in_bits == 2048


async def test_key_id_with_colons(bench: Bench) -> None:
    uid = await bench.aes(key_id=f"ns::{uuid.uuid4().hex[:8]}::key")
    assert uid.count("::") == 4
    sealed = await bench.oracle.encrypt(uid, b"colons")
    assert sealed.iv is not None and sealed.tag is not None
    assert await bench.oracle.decrypt(uid, sealed.iv + sealed.ciphertext + sealed.tag) == b"colons"


async def test_sign_and_verify(bench: Bench) -> None:
    sk = await bench.rsa()
    pk = sk + "_pk"
    data = b"to be signed"
    signature = await bench.oracle.sign(sk, data)
    assert len(signature) == 256
    assert await bench.oracle.signature_verify(sk, data, signature)
    assert await bench.oracle.signature_verify(pk, data, signature)
    assert not await bench.oracle.signature_verify(pk, data + b"!", signature)
    # The default is standard SHA-256 with RSA PKCS#1 v1.5.
    exported = await bench.hsm.export(bench.slot, bench.oracle.parse_uid(pk)[1])
    assert exported is not None and isinstance(exported.key_material, RsaPublicKeyMaterial)
    material = exported.key_material
    public = rsa.RSAPublicNumbers(
        int.from_bytes(material.public_exponent, "big"), int.from_bytes(material.modulus, "big")
    ).public_key()
    public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize(
    ("parameters", "digest", "pss"),
    [
        (
            CryptographicParameters(hashing_algorithm=HashingAlgorithm.SHA512),
            hashes.SHA512(),
            False,
        ),
        (
            CryptographicParameters(
                digital_signature_algorithm=DigitalSignatureAlgorithm.SHA384WithRSAEncryption
            ),
            hashes.SHA384(),
            False,
        ),
        (
            CryptographicParameters(
                cryptographic_algorithm=CryptographicAlgorithm.RSA,
                padding_method=PaddingMethod["PSS"],
                hashing_algorithm=HashingAlgorithm.SHA256,
            ),
            hashes.SHA256(),
            True,
        ),
    ],
)
async def test_sign_with_parameters(
    bench: Bench, parameters: CryptographicParameters, digest: hashes.HashAlgorithm, pss: bool
) -> None:
    sk = await bench.rsa()
    signature = await bench.oracle.sign(sk, b"data", parameters)
    assert await bench.oracle.signature_verify(sk, b"data", signature, parameters)
    assert not await bench.oracle.signature_verify(sk, b"data", signature)  # other scheme
    exported = await bench.hsm.export(bench.slot, bench.oracle.parse_uid(sk + "_pk")[1])
    assert exported is not None and isinstance(exported.key_material, RsaPublicKeyMaterial)
    public = rsa.RSAPublicNumbers(
        int.from_bytes(exported.key_material.public_exponent, "big"),
        int.from_bytes(exported.key_material.modulus, "big"),
    ).public_key()
    scheme: padding.AsymmetricPadding = (
        padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        if pss
        else padding.PKCS1v15()
    )
    public.verify(signature, b"data", scheme, digest)


async def test_sign_and_verify_need_an_rsa_key(bench: Bench) -> None:
    aes, sk = await bench.aes(), await bench.rsa()
    missing = bench.uid(f"missing-{uuid.uuid4().hex}")
    cases = [
        (bench.oracle.sign(aes, b"x"), f"Sign: key {aes} is a AesKey, expected an RSA private key"),
        (
            bench.oracle.sign(sk + "_pk", b"x"),
            f"Sign: key {sk}_pk is a RsaPublicKey, expected an RSA private key",
        ),
        (bench.oracle.sign(missing, b"x"), f"Sign: key {missing} not found on the HSM"),
        (
            bench.oracle.signature_verify(aes, b"x", b"s"),
            f"Verify: key {aes} is a AesKey, expected an RSA key",
        ),
        (
            bench.oracle.signature_verify(missing, b"x", b"s"),
            f"Verify: key {missing} not found on the HSM",
        ),
    ]
    for call, message in cases:
        with pytest.raises(InvalidRequestError) as info:
            await call
        assert info.value.message == message


async def test_bad_signature_parameters(bench: Bench) -> None:
    sk = await bench.rsa()
    bad = CryptographicParameters(hashing_algorithm=HashingAlgorithm.MD5)
    with pytest.raises(InvalidRequestError):
        await bench.oracle.sign(sk, b"x", bad)


async def test_mac_is_not_supported(bench: Bench) -> None:
    aes = await bench.aes()
    with pytest.raises(NotSupportedError):
        await bench.oracle.mac(aes, b"x")
    with pytest.raises(NotSupportedError):
        await bench.oracle.mac_verify(aes, b"x", b"m")


# --------------------------------------------------------------------------------------------
# Rules that need a restricted HSM or a look at the calls (software HSM only)
# --------------------------------------------------------------------------------------------


async def _keys(hsm: SoftwareHsm, slot: int = 7) -> tuple[str, str]:
    await hsm.create_key(slot, "a::b", HsmKeyAlgorithm.AES, 256, False)
    await hsm.create_keypair(slot, "r", "r_pk", HsmKeypairAlgorithm.RSA, 2048, False)
    hsm.calls.clear()
    return f"hsm::{slot}::a::b", f"hsm::{slot}::r"


@pytest.mark.parametrize(
    ("supported", "aes", "rsa_algorithm"),
    [
        (ALL_ALGORITHMS, CryptoAlgorithm.AES_GCM, CryptoAlgorithm.RSA_OAEP_SHA256),
        (
            [CryptoAlgorithm.AES_CBC, CryptoAlgorithm.RSA_OAEP_SHA1, CryptoAlgorithm.RSA_PKCS_V15],
            CryptoAlgorithm.AES_CBC,
            CryptoAlgorithm.RSA_OAEP_SHA1,
        ),
        (
            [CryptoAlgorithm.AES_GCM, CryptoAlgorithm.RSA_PKCS_V15],
            None,
            CryptoAlgorithm.RSA_PKCS_V15,
        ),
    ],
)
async def test_default_algorithms_follow_the_supported_list(
    soft: SoftwareHsm,
    supported: list[CryptoAlgorithm],
    aes: CryptoAlgorithm | None,
    rsa_algorithm: CryptoAlgorithm,
) -> None:
    soft.supported = supported
    oracle = HsmEncryptionOracle(soft, "hsm")
    aes_uid, rsa_uid = await _keys(soft)
    await oracle.encrypt(aes_uid, b"x")
    await oracle.encrypt(rsa_uid, b"x")
    used = [call[3] for call in soft.calls if call[0] == "encrypt"]
    assert used == [aes or CryptoAlgorithm.AES_GCM, rsa_algorithm]


async def test_nothing_supported(soft: SoftwareHsm) -> None:
    soft.supported = []
    oracle = HsmEncryptionOracle(soft, "hsm")
    aes_uid, rsa_uid = await _keys(soft)
    with pytest.raises(InvalidRequestError, match="AES not supported"):
        await oracle.encrypt(aes_uid, b"x")
    with pytest.raises(InvalidRequestError, match="RSA not supported"):
        await oracle.decrypt(rsa_uid, b"x")
    # An explicit algorithm does not consult the list.
    await oracle.encrypt(aes_uid, b"x", CryptoAlgorithm.AES_GCM)


async def test_calls_made_by_the_oracle(soft: SoftwareHsm) -> None:
    oracle = HsmEncryptionOracle(soft, "hsm")
    aes_uid, rsa_uid = await _keys(soft)

    await oracle.encrypt(aes_uid, b"x", CryptoAlgorithm.AES_GCM)
    assert soft.calls == [("encrypt", 7, "a::b", CryptoAlgorithm.AES_GCM, None)]  # no look-ups
    soft.calls.clear()

    await oracle.encrypt(aes_uid, b"x", None, b"")
    assert soft.calls == [
        ("get_key_type", 7, "a::b"),
        ("get_supported_algorithms", 7),
        ("encrypt", 7, "a::b", CryptoAlgorithm.AES_GCM, None),  # empty AAD is passed as None
    ]
    soft.calls.clear()

    await oracle.encrypt(rsa_uid, b"x")
    assert soft.calls == [
        ("get_key_type", 7, "r"),
        ("get_key_type", 7, "r_pk"),
        ("get_supported_algorithms", 7),
        ("encrypt", 7, "r_pk", CryptoAlgorithm.RSA_OAEP_SHA256, None),
    ]
    soft.calls.clear()

    await oracle.signature_verify(rsa_uid, b"x", b"sig")
    assert soft.calls[-1] == ("verify", 7, "r", SigningAlgorithm.SHA256_WITH_RSA)


async def test_prefix_is_the_oracle_prefix(soft: SoftwareHsm) -> None:
    oracle = HsmEncryptionOracle(soft, "hsm::softhsm2_1")
    await soft.create_key(0, "k", HsmKeyAlgorithm.AES, 128, False)
    assert await oracle.get_key_type("hsm::softhsm2_1::0::k") is KeyType.AES_KEY
    with pytest.raises(InvalidRequestError, match="'hsm::softhsm2_1::<slot_id>::<key_id>'"):
        await oracle.get_key_type("hsm::0::k")


# --------------------------------------------------------------------------------------------
# From a configuration file to a working oracle (real token)
# --------------------------------------------------------------------------------------------


async def test_configured_pkcs11_hsm_oracle(
    anyio_backend: str, token: SoftHsmToken, slot: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KMS_TEST_ORACLE_PIN", token.user_pin)
    config = parse_config(
        f"""
        [default_store]
        kind = "lmdb"
        path = "/tmp/unused"

        [[hsm_instances]]
        model = "softhsm2"
        library = "{token.module}"
        admins = ["admin"]

        [[hsm_instances.slots]]
        id = {slot}
        password_env = "KMS_TEST_ORACLE_PIN"
        """
    )
    [instance] = config.hsm_instances
    [prefix] = hsm_prefixes(config)
    assert prefix == "hsm" and instance.library is not None
    hsm = Pkcs11Hsm(
        instance.library,
        instance.passwords(),
        profile=instance.model,
    )
    config.zeroize()  # the HSM keeps its own copies
    async with hsm:
        oracle = HsmEncryptionOracle(hsm, prefix)
        key_id = f"oracle-config-{uuid.uuid4().hex[:8]}"
        await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, False)
        try:
            uid = hsm_uid(prefix, slot, key_id)
            sealed = await oracle.encrypt(uid, b"configured")
            assert sealed.iv is not None and sealed.tag is not None
            wrapped = sealed.iv + sealed.ciphertext + sealed.tag
            assert await oracle.decrypt(uid, wrapped) == b"configured"
        finally:
            await hsm.delete(slot, key_id)
