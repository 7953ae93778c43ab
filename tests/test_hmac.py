"""HMAC through the HSM: ``hsm_ops.mac``, ``Pkcs11Hsm.mac`` and ``HsmEncryptionOracle.mac``.

Runs on the SoftHSM2 test token with a token HMAC key (CKK_GENERIC_SECRET, created with the core
from a known value), so every MAC is checked against Python's ``hmac``. A key of another type
(AES) asked for a MAC raises ``NotSupportedError`` (an ``InterfaceError``): the token has no HMAC
key under that id, which is the case the issue names "not supported".
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from kms_iface import InvalidRequestError, NotSupportedError
from kms_iface.errors import InterfaceError, KeySizeRangeError, MechanismInvalidError
from kms_iface.hsm import HsmKeyAlgorithm, HsmObjectFilter, KeyId, MacCapable
from kms_iface.hsm_oracle import HsmEncryptionOracle, hsm_uid
from kms_iface.kmip.attributes import CryptographicParameters
from kms_iface.kmip.enums import CryptographicAlgorithm
from kms_iface.pkcs11 import Session, hsm_ops
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11_hsm import Pkcs11Hsm
from tests.test_hsm_oracle import SoftwareHsm

pytestmark = pytest.mark.anyio

# 64 known bytes: SoftHSM2 refuses an HMAC key shorter than the hash output (CKR_KEY_SIZE_RANGE
# for a 32-byte key with HMAC-SHA384 / SHA512; see test_short_key_for_sha512).
KEY = bytes(range(1, 65))
DATA = b"the quick brown fox jumps over the lazy dog"
HASHES = {
    CryptographicAlgorithm.HMACSHA1: hashlib.sha1,
    CryptographicAlgorithm.HMACSHA224: hashlib.sha224,
    CryptographicAlgorithm.HMACSHA256: hashlib.sha256,
    CryptographicAlgorithm.HMACSHA384: hashlib.sha384,
    CryptographicAlgorithm.HMACSHA512: hashlib.sha512,
}


def expected(algorithm: CryptographicAlgorithm, data: bytes = DATA) -> bytes:
    return hmac.new(KEY, data, HASHES[algorithm]).digest()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def hmac_key(session: Session) -> Iterator[str]:
    """A token HMAC key (generic secret, sensitive) with a unique id; destroyed afterwards."""
    key_id = f"hmac-{uuid.uuid4().hex[:12]}"
    raw = key_id.encode()
    handle = session.create_object(
        [
            (ck.CKA_CLASS, ck.CKO_SECRET_KEY),
            (ck.CKA_KEY_TYPE, ck.CKK_GENERIC_SECRET),
            (ck.CKA_VALUE, KEY),
            (ck.CKA_TOKEN, True),
            (ck.CKA_PRIVATE, True),
            (ck.CKA_SENSITIVE, True),
            (ck.CKA_SIGN, True),
            (ck.CKA_VERIFY, True),
            (ck.CKA_ID, raw),
            (ck.CKA_LABEL, raw),
        ]
    )
    try:
        yield key_id
    finally:
        session.destroy_object(handle)


@pytest.fixture
async def hsm(anyio_backend: str, token: SoftHsmToken, slot: int) -> AsyncIterator[Pkcs11Hsm]:
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}, profile="softhsm2") as h:
        yield h


# -- the core functions ------------------------------------------------------------------------


def test_ops_match_python_hmac(session: Session, hmac_key: str) -> None:
    (handle,) = session.find_objects([(ck.CKA_ID, hmac_key.encode())])
    for algorithm in HASHES:
        mac = hsm_ops.mac(session, handle, algorithm, DATA)
        assert mac == expected(algorithm)
        assert hsm_ops.mac_verify(session, handle, algorithm, DATA, mac)
        assert not hsm_ops.mac_verify(session, handle, algorithm, DATA + b"!", mac)
        assert not hsm_ops.mac_verify(session, handle, algorithm, DATA, mac[:-1])
    with pytest.raises(NotSupportedError):
        hsm_ops.mac(session, handle, CryptographicAlgorithm.HMACMD5, DATA)
    with pytest.raises(NotSupportedError):
        hsm_ops.mac(session, handle, CryptographicAlgorithm.AES, DATA)


def test_short_key_for_sha512(session: Session) -> None:
    handle = session.create_object(
        [
            (ck.CKA_CLASS, ck.CKO_SECRET_KEY),
            (ck.CKA_KEY_TYPE, ck.CKK_GENERIC_SECRET),
            (ck.CKA_VALUE, KEY[:32]),
            (ck.CKA_TOKEN, False),
            (ck.CKA_SIGN, True),
        ]
    )
    try:
        short = hsm_ops.mac(session, handle, CryptographicAlgorithm.HMACSHA256, DATA)
        assert short == hmac.new(KEY[:32], DATA, hashlib.sha256).digest()
        with pytest.raises(KeySizeRangeError):
            hsm_ops.mac(session, handle, CryptographicAlgorithm.HMACSHA512, DATA)
    finally:
        session.destroy_object(handle)


# -- Pkcs11Hsm ------------------------------------------------------------------------------------


async def test_hsm_mac_and_verify(hsm: Pkcs11Hsm, slot: int, hmac_key: str) -> None:
    assert isinstance(hsm, MacCapable)
    for algorithm in HASHES:
        mac = await hsm.mac(slot, hmac_key, algorithm, DATA)
        assert mac == expected(algorithm)
        assert await hsm.mac_verify(slot, hmac_key, algorithm, DATA, mac)
        assert await hsm.mac_verify(slot, hmac_key.encode(), algorithm, memoryview(DATA), mac)
        assert not await hsm.mac_verify(slot, hmac_key, algorithm, b"tampered" + DATA, mac)
        assert not await hsm.mac_verify(slot, hmac_key, algorithm, DATA, mac[:8])
    assert await hsm.mac(slot, hmac_key, CryptographicAlgorithm.HMACSHA256, b"") == expected(
        CryptographicAlgorithm.HMACSHA256, b""
    )


async def test_hmac_keys_stay_outside_the_contract(
    hsm: Pkcs11Hsm, slot: int, hmac_key: str
) -> None:
    assert await hsm.get_key_type(slot, hmac_key) is None
    assert await hsm.get_key_metadata(slot, hmac_key) is None
    assert hmac_key.encode() not in await hsm.find(slot, HsmObjectFilter.ANY)


async def test_hsm_argument_checks(hsm: Pkcs11Hsm, slot: int, hmac_key: str) -> None:
    sha256 = CryptographicAlgorithm.HMACSHA256
    with pytest.raises(InvalidRequestError, match="Object not found"):
        await hsm.mac(slot, f"missing-{uuid.uuid4().hex}", sha256, DATA)
    with pytest.raises(InvalidRequestError, match="data must be bytes-like"):
        await hsm.mac(slot, hmac_key, sha256, "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="mac must be bytes-like"):
        await hsm.mac_verify(slot, hmac_key, sha256, DATA, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="algorithm must be a CryptographicAlgorithm"):
        await hsm.mac(slot, hmac_key, "HMACSHA256", DATA)  # type: ignore[arg-type]
    with pytest.raises(NotSupportedError):
        await hsm.mac(slot, hmac_key, CryptographicAlgorithm.HMACSHA3256, DATA)
    with pytest.raises(InvalidRequestError, match="not accessible"):
        await hsm.mac(slot + 1000, hmac_key, sha256, DATA)


async def test_aes_key_cannot_mac(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = f"hmac-aes-{uuid.uuid4().hex[:12]}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, False)
    try:
        with pytest.raises(NotSupportedError, match="an AES key") as info:
            await hsm.mac(slot, key_id, CryptographicAlgorithm.HMACSHA256, DATA)
        assert isinstance(info.value, InterfaceError)
        with pytest.raises(NotSupportedError):
            await hsm.mac_verify(slot, key_id, CryptographicAlgorithm.HMACSHA256, DATA, b"x" * 32)
    finally:
        await hsm.delete(slot, key_id)


# -- the oracle ----------------------------------------------------------------------------------


async def test_oracle_mac(hsm: Pkcs11Hsm, slot: int, hmac_key: str) -> None:
    oracle = HsmEncryptionOracle(hsm, "hsm")
    uid = hsm_uid("hsm", slot, hmac_key)
    sha256 = CryptographicAlgorithm.HMACSHA256
    mac = await oracle.mac(uid, DATA)  # default: HMAC-SHA256
    assert mac == expected(sha256)
    assert await oracle.mac(uid, DATA, CryptographicParameters()) == mac
    assert await oracle.mac_verify(uid, DATA, mac)
    assert not await oracle.mac_verify(uid, DATA, mac[:-1])
    assert not await oracle.mac_verify(uid, DATA[:-1], mac)
    for algorithm in HASHES:
        params = CryptographicParameters(cryptographic_algorithm=algorithm)
        mac = await oracle.mac(uid, DATA, params)
        assert mac == expected(algorithm)
        assert await oracle.mac_verify(uid, DATA, mac, params)
    with pytest.raises(NotSupportedError):
        aes = CryptographicParameters(cryptographic_algorithm=CryptographicAlgorithm.AES)
        await oracle.mac(uid, DATA, aes)


async def test_oracle_unknown_key(hsm: Pkcs11Hsm, slot: int) -> None:
    oracle = HsmEncryptionOracle(hsm, "hsm")
    uid = hsm_uid("hsm", slot, f"missing-{uuid.uuid4().hex}")
    with pytest.raises(InvalidRequestError, match="Object not found"):
        await oracle.mac(uid, DATA)
    with pytest.raises(InvalidRequestError, match="Object not found"):
        await oracle.mac_verify(uid, DATA, b"x" * 32)
    with pytest.raises(InvalidRequestError, match="in the form of"):
        await oracle.mac("bad", DATA)


class _NoMechanismHsm(SoftwareHsm, MacCapable):
    """A MacCapable HSM whose token lacks every HMAC mechanism."""

    async def mac(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptographicAlgorithm,
        data: bytes | bytearray | memoryview,
    ) -> bytes:
        raise MechanismInvalidError(function="C_SignInit")

    async def mac_verify(
        self,
        slot_id: int,
        key_id: KeyId,
        algorithm: CryptographicAlgorithm,
        data: bytes | bytearray | memoryview,
        mac: bytes | bytearray | memoryview,
    ) -> bool:
        raise MechanismInvalidError(function="C_VerifyInit")


async def test_oracle_without_mechanism(anyio_backend: str) -> None:
    oracle = HsmEncryptionOracle(_NoMechanismHsm([0]), "hsm")
    with pytest.raises(NotSupportedError, match="HMACSHA256"):
        await oracle.mac("hsm::0::k", DATA)
    with pytest.raises(NotSupportedError, match="HMACSHA256"):
        await oracle.mac_verify("hsm::0::k", DATA, b"m")


async def test_oracle_without_mac_capability(anyio_backend: str) -> None:
    software = SoftwareHsm([0])
    assert not isinstance(software, MacCapable)
    oracle = HsmEncryptionOracle(software, "hsm")
    with pytest.raises(NotSupportedError):
        await oracle.mac("hsm::0::k", DATA)
    with pytest.raises(NotSupportedError):
        await oracle.mac_verify("hsm::0::k", DATA, b"m")
    assert software.calls == []
