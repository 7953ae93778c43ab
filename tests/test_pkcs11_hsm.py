"""Pkcs11Hsm on a real SoftHSM2 token, under asyncio and trio: the behaviour of
hsm-behaviour.md (key templates and ids, lookup rules, layouts, the handle cache, batching,
cancellation) and the vendor profiles."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms_iface import (
    AesKeyMaterial,
    CryptoAlgorithm,
    DecryptionError,
    EncryptedContent,
    HsmError,
    HsmKeyAlgorithm,
    HsmKeypairAlgorithm,
    HsmObjectFilter,
    InvalidRequestError,
    KeyType,
    RsaPrivateKeyMaterial,
    RsaPublicKeyMaterial,
    SigningAlgorithm,
)
from kms_iface.errors import PinIncorrectError
from kms_iface.pkcs11 import Module, Session, aes_key_template, hsm_ops
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.keys import format_ck_date, parse_ck_date
from kms_iface.pkcs11.profiles import PROFILES, get_profile, resolve_library
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11_hsm import Pkcs11Hsm

pytestmark = pytest.mark.anyio

GCM = CryptoAlgorithm.AES_GCM
CBC = CryptoAlgorithm.AES_CBC
P256 = bytes.fromhex("06082a8648ce3d030107")  # DER OID of prime256v1


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def hsm(token: SoftHsmToken, slot: int, anyio_backend: str) -> AsyncIterator[Pkcs11Hsm]:
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}, pool_size=4) as h:
        yield h


def unique(prefix: str) -> str:
    """Ids differ per test and per backend: the token outlives each test."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def aes_key(hsm: Pkcs11Hsm, slot: int, *, sensitive: bool = False) -> str:
    key_id = unique("aes")
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, sensitive)
    return key_id


def wire(sealed: EncryptedContent) -> bytes:
    """AES-GCM output as ``decrypt`` takes it: iv || ciphertext || tag."""
    assert sealed.iv is not None and sealed.tag is not None
    return sealed.iv + sealed.ciphertext + sealed.tag


async def aes_value(hsm: Pkcs11Hsm, slot: int, key_id: str) -> bytes:
    exported = await hsm.export(slot, key_id)
    assert exported is not None and isinstance(exported.key_material, AesKeyMaterial)
    return bytes(exported.key_material.key)


# -- life cycle and profiles --------------------------------------------------------------------


async def test_life_cycle(token: SoftHsmToken, slot: int, module: Module) -> None:
    hsm = Pkcs11Hsm(token.module, {slot: token.user_pin})
    assert await hsm.get_available_slot_list() == [slot]
    with pytest.raises(InvalidRequestError, match=r"slot 4242 is not accessible$") as caught:
        await hsm.generate_random(4242, 8)
    assert str(caught.value) == "Invalid Request: slot 4242 is not accessible"
    assert len(await hsm.generate_random(slot, 24)) == 24
    await hsm.aclose()
    await hsm.aclose()  # idempotent
    assert "closed" in repr(hsm)
    with pytest.raises(InvalidRequestError, match="closed"):
        await hsm.generate_random(slot, 8)
    # A configured slot without an initialised token is not accessible either.
    empty = next(s for s in module.slots() if not module.token_info(s).flags & 0x400)
    async with Pkcs11Hsm(token.module, {empty: "1234"}) as other:
        with pytest.raises(InvalidRequestError, match=rf"slot {empty} is not accessible$"):
            await other.generate_random(empty, 8)


async def test_wrong_pin_is_reported(spare_token: SoftHsmToken, module: Module) -> None:
    spare = module.find_slot(spare_token.label)
    async with Pkcs11Hsm(spare_token.module, {spare: "0000"}) as hsm:
        with pytest.raises(PinIncorrectError):
            await hsm.generate_random(spare, 8)


async def test_profiles(
    token: SoftHsmToken, slot: int, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    assert {p.name: (p.find_batch, p.cbc_limit) for p in PROFILES.values()} == {
        "proteccio": (64, None),
        "utimaco": (64, None),
        "crypt2pay": (64, None),
        "softhsm2": (32, None),
        "smartcardhsm": (16, 1024),
        "other": (32, None),
    }
    assert get_profile("utimaco").default_path == "/lib/libcs_pkcs11_R3.so"
    with pytest.raises(InvalidRequestError, match="unknown HSM profile 'nope'"):
        get_profile("nope")
    with pytest.raises(InvalidRequestError, match="unknown HSM profile 'nope'"):
        Pkcs11Hsm.from_profile("nope", {slot: token.user_pin})
    monkeypatch.setenv("SOFTHSM2_PKCS11_LIB", token.module)
    async with Pkcs11Hsm.from_profile("softhsm2", {slot: token.user_pin}) as hsm:
        assert hsm.library_path == token.module
        assert len(await hsm.generate_random(slot, 4)) == 4
    monkeypatch.setenv("SOFTHSM2_PKCS11_LIB", "/nonexistent/libsofthsm2.so")
    with pytest.raises(InvalidRequestError, match=r"'softhsm2'.*'/nonexistent/libsofthsm2.so'"):
        Pkcs11Hsm.from_profile("softhsm2", {slot: token.user_pin})
    monkeypatch.delenv("OTHER_HSM_PKCS11_LIB", raising=False)
    with pytest.raises(InvalidRequestError, match=r"'other' has no default.*OTHER_HSM_PKCS11_LIB"):
        resolve_library(get_profile("other"))
    assert resolve_library(get_profile("other"), token.module) == token.module
    with pytest.raises(InvalidRequestError, match=r"'proteccio'.*'/missing.so'"):
        Pkcs11Hsm("/missing.so", {slot: token.user_pin}, profile="proteccio")


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), 86401, True, "5"])
def test_call_timeout_is_checked(token: SoftHsmToken, slot: int, bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="call_timeout must be"):
        Pkcs11Hsm(token.module, {slot: token.user_pin}, call_timeout=bad)  # type: ignore[arg-type]


# -- key creation, ids and lookup ---------------------------------------------------------------


async def test_aes_key_templates_and_refusals(hsm: Pkcs11Hsm, slot: int, module: Module) -> None:
    key_id = await aes_key(hsm, slot)
    with pytest.raises(HsmError, match=r"A secret key with this id already exists$"):
        await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 128, False)
    with pytest.raises(
        InvalidRequestError, match=r"Invalid key length: 192 bits, for and HSM AES key$"
    ):
        await hsm.create_key(slot, unique("aes192"), HsmKeyAlgorithm.AES, 192, False)
    # Cosmian's template, read back from the token.
    with hsm.slot_state(slot).pool.session() as raw:
        (handle,) = raw.find_objects([(ck.CKA_ID, key_id.encode())])
        values = raw.get_attributes(
            handle,
            [
                ck.CKA_LABEL,
                ck.CKA_TOKEN,
                ck.CKA_PRIVATE,
                ck.CKA_ENCRYPT,
                ck.CKA_DECRYPT,
                ck.CKA_SENSITIVE,
                ck.CKA_EXTRACTABLE,
                ck.CKA_VALUE_LEN,
            ],
        )
    assert values == [key_id.encode(), True, True, True, True, False, True, 32]
    assert await hsm.get_key_type(slot, key_id) is KeyType.AES_KEY
    assert await hsm.get_key_type(slot, "no-such-key") is None
    assert await hsm.export(slot, "no-such-key") is None
    assert await hsm.get_key_metadata(slot, "no-such-key") is None
    for operation in (
        hsm.encrypt(slot, "no-such-key", GCM, b"x"),
        hsm.delete(slot, "no-such-key"),
        hsm.sign(slot, "no-such-key", SigningAlgorithm.SHA256_WITH_RSA, b"x"),
    ):
        with pytest.raises(InvalidRequestError, match=r"Object not found$"):
            await operation


async def test_rsa_key_pair_and_pk_convention(hsm: Pkcs11Hsm, slot: int) -> None:
    sk = unique("rsa")
    await hsm.create_keypair(slot, sk, sk + "_pk", HsmKeypairAlgorithm.RSA, 2048, False)
    with pytest.raises(HsmError, match=r"A private key with this id already exists$"):
        await hsm.create_keypair(slot, sk, sk + "_pk2", HsmKeypairAlgorithm.RSA, 2048, False)
    with pytest.raises(InvalidRequestError, match="Invalid key length: 1000 bits"):
        await hsm.create_keypair(slot, unique("r"), "x_pk", HsmKeypairAlgorithm.RSA, 1000, False)
    found = await hsm.find(slot, HsmObjectFilter.RSA_KEY)
    assert {sk.encode(), (sk + "_pk").encode()} <= set(found)
    assert sk.encode() in await hsm.find(slot, HsmObjectFilter.RSA_PRIVATE_KEY)
    assert (sk + "_pk").encode() not in await hsm.find(slot, HsmObjectFilter.RSA_PRIVATE_KEY)
    assert (sk + "_pk").encode() in await hsm.find(slot, HsmObjectFilter.RSA_PUBLIC_KEY)
    assert sk.encode() not in await hsm.find(slot, HsmObjectFilter.AES_KEY)

    private = await hsm.export(slot, sk)
    public = await hsm.export(slot, sk + "_pk")
    assert private is not None and public is not None
    assert (private.id, public.id) == (sk, sk + "_pk")
    assert isinstance(private.key_material, RsaPrivateKeyMaterial)
    assert isinstance(public.key_material, RsaPublicKeyMaterial)
    assert public.key_material.public_exponent == b"\x01\x00\x01"
    n = int.from_bytes(public.key_material.modulus, "big")
    assert n.bit_length() == 2048
    m = private.key_material
    p, q = int.from_bytes(bytes(m.prime_1), "big"), int.from_bytes(bytes(m.prime_2), "big")
    assert p * q == n
    assert await hsm.get_key_type(slot, sk) is KeyType.RSA_PRIVATE_KEY
    assert await hsm.get_key_type(slot, sk + "_pk") is KeyType.RSA_PUBLIC_KEY
    metadata = await hsm.get_key_metadata(slot, sk + "_pk")
    assert metadata is not None and metadata.key_length_in_bits == 2048

    # Signatures: sign with the private key, verify with the public one (``_pk`` is tried).
    public_key = rsa.RSAPublicNumbers(65537, n).public_key()
    for algorithm in (SigningAlgorithm.SHA256_WITH_RSA, SigningAlgorithm.SHA256_WITH_RSA_PSS):
        signature = await hsm.sign(slot, sk, algorithm, b"message")
        assert await hsm.verify(slot, sk, algorithm, b"message", signature)
        assert await hsm.verify(slot, sk + "_pk", algorithm, b"message", signature)
        assert not await hsm.verify(slot, sk, algorithm, b"other", signature)
    signature = await hsm.sign(slot, sk, SigningAlgorithm.SHA256_WITH_RSA, b"message")
    public_key.verify(signature, b"message", rsa_padding.PKCS1v15(), hashes.SHA256())

    # RSA encryption: OAEP-SHA1 and PKCS#1 v1.5 both ways with `cryptography`.
    oaep = rsa_padding.OAEP(rsa_padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    sealed = await hsm.encrypt(slot, sk + "_pk", CryptoAlgorithm.RSA_OAEP_SHA1, b"wrapped key")
    assert sealed.iv is None and sealed.tag is None and len(sealed.ciphertext) == 256
    opened = await hsm.decrypt(slot, sk, CryptoAlgorithm.RSA_OAEP_SHA1, sealed.ciphertext)
    assert opened == b"wrapped key"
    sealed_here = public_key.encrypt(b"from cryptography", oaep)
    assert await hsm.decrypt(slot, sk, CryptoAlgorithm.RSA_OAEP_SHA1, sealed_here) == (
        b"from cryptography"
    )
    v15 = await hsm.encrypt(slot, sk + "_pk", CryptoAlgorithm.RSA_PKCS_V15, b"v1.5")
    assert await hsm.decrypt(slot, sk, CryptoAlgorithm.RSA_PKCS_V15, v15.ciphertext) == b"v1.5"
    with pytest.raises(InvalidRequestError, match="at most 214 bytes"):
        await hsm.encrypt(slot, sk + "_pk", CryptoAlgorithm.RSA_OAEP_SHA1, bytes(215))
    with pytest.raises(InvalidRequestError, match="An RSA public key cannot be used to decrypt"):
        await hsm.decrypt(slot, sk + "_pk", CryptoAlgorithm.RSA_OAEP_SHA1, sealed.ciphertext)
    with pytest.raises(InvalidRequestError, match="cannot be used to encrypt"):
        await hsm.encrypt(slot, sk, CryptoAlgorithm.RSA_OAEP_SHA1, b"x")
    await hsm.delete(slot, sk)
    await hsm.delete(slot, sk + "_pk")
    assert await hsm.get_key_type(slot, sk) is None


async def test_sensitive_key_is_not_exported_but_described(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = await aes_key(hsm, slot, sensitive=True)
    with pytest.raises(
        HsmError, match=r"This key is sensitive and cannot be exported from the HSM\.$"
    ):
        await hsm.export(slot, key_id)
    metadata = await hsm.get_key_metadata(slot, key_id)
    assert metadata is not None
    assert (metadata.key_type, metadata.key_length_in_bits, metadata.sensitive, metadata.id) == (
        KeyType.AES_KEY,
        256,
        True,
        key_id,
    )
    sealed = await hsm.encrypt(slot, key_id, GCM, b"still usable")
    assert await hsm.decrypt(slot, key_id, GCM, wire(sealed)) == (b"still usable")


async def test_find_skips_unsupported_key_types(hsm: Pkcs11Hsm, slot: int, module: Module) -> None:
    ec_id = unique("ec").encode()
    aes_id = await aes_key(hsm, slot)
    pool = hsm.slot_state(slot).pool
    with pool.session() as session:
        session.generate_key_pair(
            ck.CKM_EC_KEY_PAIR_GEN,
            [
                (ck.CKA_CLASS, ck.CKO_PUBLIC_KEY),
                (ck.CKA_KEY_TYPE, ck.CKK_EC),
                (ck.CKA_TOKEN, True),
                (ck.CKA_EC_PARAMS, P256),
                (ck.CKA_ID, ec_id),
                (ck.CKA_LABEL, ec_id),
            ],
            [
                (ck.CKA_CLASS, ck.CKO_PRIVATE_KEY),
                (ck.CKA_KEY_TYPE, ck.CKK_EC),
                (ck.CKA_TOKEN, True),
                (ck.CKA_PRIVATE, True),
                (ck.CKA_SIGN, True),
                (ck.CKA_ID, ec_id),
                (ck.CKA_LABEL, ec_id),
            ],
        )
    everything = await hsm.find(slot, HsmObjectFilter.ANY)
    assert aes_id.encode() in everything
    assert ec_id not in everything
    assert await hsm.get_key_type(slot, ec_id) is None
    assert await hsm.get_key_metadata(slot, ec_id) is None
    with pytest.raises(InvalidRequestError, match="key type this HSM interface does not handle"):
        await hsm.encrypt(slot, ec_id, GCM, b"x")


async def test_key_provisioned_by_pkcs11_tool_is_usable_by_label(
    hsm: Pkcs11Hsm, slot: int, token: SoftHsmToken
) -> None:
    tool = shutil.which("pkcs11-tool")
    if tool is None:
        pytest.fail("pkcs11-tool is missing: install Debian's opensc package")
    label = unique("onlylabel")
    done = subprocess.run(
        [
            *(tool, "--module", token.module, "--slot", str(slot)),
            *("--login", "--pin", token.user_pin),
            *("--keygen", "--key-type", "AES:32", "--label", label),
        ],
        env={**os.environ, **token.environ()},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert label.encode() in await hsm.find(slot, HsmObjectFilter.AES_KEY)
    metadata = await hsm.get_key_metadata(slot, label)
    assert metadata is not None and (metadata.id, metadata.key_length_in_bits) == (label, 256)
    sealed = await hsm.encrypt(slot, label, GCM, b"by label")
    assert await hsm.decrypt(slot, label, GCM, wire(sealed)) == (b"by label")


async def test_same_label_twice_is_an_error(hsm: Pkcs11Hsm, slot: int) -> None:
    label = unique("twin")
    with hsm.slot_state(slot).pool.session() as session:
        twins = [
            session.generate_key(
                ck.CKM_AES_KEY_GEN, aes_key_template(128, label=label, key_id=key_id + b"twin")
            )
            for key_id in (b"\x01", b"\x02")
        ]
    try:
        with pytest.raises(
            HsmError,
            match=rf"Multiple keys with label '{label}' and the same key type found in the HSM "
            r"slot\. Labels must be unique per key type\.$",
        ):
            await hsm.encrypt(slot, label, GCM, b"x")
    finally:  # ambiguous keys would break later tests that list every key of the token
        with hsm.slot_state(slot).pool.session() as session:
            for handle in twins:
                session.destroy_object(handle)


# -- byte layouts -------------------------------------------------------------------------------


async def test_gcm_and_cbc_layouts_match_cryptography(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = await aes_key(hsm, slot)
    key = await aes_value(hsm, slot, key_id)
    for size in (0, 1, 16, 1000):
        plain = os.urandom(size)
        sealed = await hsm.encrypt(slot, key_id, GCM, plain, aad=b"header")
        assert sealed.iv is not None and sealed.tag is not None
        assert (len(sealed.iv), len(sealed.tag), len(sealed.ciphertext)) == (12, 16, size)
        joined = wire(sealed)
        assert AESGCM(key).decrypt(sealed.iv, sealed.ciphertext + sealed.tag, b"header") == plain
        iv = os.urandom(12)
        theirs = iv + AESGCM(key).encrypt(iv, plain, b"header")
        assert await hsm.decrypt(slot, key_id, GCM, theirs, aad=b"header") == plain
        with pytest.raises(DecryptionError):
            await hsm.decrypt(slot, key_id, GCM, joined, aad=b"other header")

        sealed = await hsm.encrypt(slot, key_id, CBC, plain)
        assert sealed.iv is not None and sealed.tag is None
        assert len(sealed.ciphertext) == (size // 16 + 1) * 16
        decryptor = Cipher(algorithms.AES(key), modes.CBC(sealed.iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        padded = decryptor.update(sealed.ciphertext) + decryptor.finalize()
        assert unpadder.update(padded) + unpadder.finalize() == plain
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        body = encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()
        assert await hsm.decrypt(slot, key_id, CBC, iv + body) == plain
    with pytest.raises(InvalidRequestError, match=r"Invalid AES GCM ciphertext$"):
        await hsm.decrypt(slot, key_id, GCM, bytes(11))


async def test_supported_algorithms_are_probed_once(
    hsm: Pkcs11Hsm, slot: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[object] = []
    real_probe = hsm_ops.probe_oaep_hashes

    def counted(session: Session) -> set[CryptoAlgorithm]:
        probes.append(session)
        return real_probe(session)

    monkeypatch.setattr(hsm_ops, "probe_oaep_hashes", counted)  # counts, then runs the real one
    algorithms = await hsm.get_supported_algorithms(slot)
    assert set(algorithms) == {
        CryptoAlgorithm.AES_CBC,
        CryptoAlgorithm.AES_GCM,
        CryptoAlgorithm.RSA_PKCS_V15,
        CryptoAlgorithm.RSA_OAEP_SHA1,
    }  # SoftHSM2 2.6 lists CKM_RSA_PKCS_OAEP but refuses SHA-256
    assert CryptoAlgorithm.RSA_OAEP_SHA256 not in algorithms
    assert await hsm.get_supported_algorithms(slot) == algorithms
    assert len(probes) == 1  # cached: no temporary key pair generated again


# -- the handle cache ---------------------------------------------------------------------------


async def test_warm_lookup_makes_no_find_call(hsm: Pkcs11Hsm, slot: int, module: Module) -> None:
    """Observable without instrumentation: rename the key behind the HSM's back. A lookup by
    C_FindObjects would then find nothing; the warm path still reaches the key by its handle."""
    key_id = await aes_key(hsm, slot)
    state = hsm.slot_state(slot)
    await hsm.encrypt(slot, key_id, GCM, b"warm up")
    cached = state.cache_size()
    with state.pool.session() as session:
        (handle,) = session.find_objects([(ck.CKA_ID, key_id.encode())])
        session.set_attributes(handle, [(ck.CKA_ID, b"renamed"), (ck.CKA_LABEL, "renamed")])
    try:
        for _ in range(20):
            sealed = await hsm.encrypt(slot, key_id, GCM, b"by cached handle")
        assert state.cache_size() == cached
        assert await hsm.decrypt(slot, key_id, GCM, wire(sealed))
        # The same request with a cold cache must search, and finds nothing.
        state.evict_handle(handle)
        with pytest.raises(InvalidRequestError, match=r"Object not found$"):
            await hsm.encrypt(slot, key_id, GCM, b"cold")
    finally:
        with state.pool.session() as session:
            session.set_attributes(handle, [(ck.CKA_ID, key_id), (ck.CKA_LABEL, key_id)])


async def test_cache_is_evicted_on_delete_and_stale_handles(
    hsm: Pkcs11Hsm, slot: int, module: Module
) -> None:
    key_id = await aes_key(hsm, slot)
    await hsm.encrypt(slot, key_id, GCM, b"warm")
    await hsm.delete(slot, key_id)
    with pytest.raises(InvalidRequestError, match=r"Object not found$"):
        await hsm.encrypt(slot, key_id, GCM, b"gone")
    # A new key under the same id is the one used.
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 128, False)
    sealed = await hsm.encrypt(slot, key_id, GCM, b"new key")
    key = await aes_value(hsm, slot, key_id)
    assert len(key) == 16 and sealed.iv is not None and sealed.tag is not None
    assert AESGCM(key).decrypt(sealed.iv, sealed.ciphertext + sealed.tag, None) == b"new key"
    # Destroyed and replaced behind the HSM's back: the stale handle is evicted and the id
    # looked up again once.
    with hsm.slot_state(slot).pool.session() as session:
        (old,) = session.find_objects([(ck.CKA_ID, key_id.encode())])
        session.destroy_object(old)
        session.generate_key(
            ck.CKM_AES_KEY_GEN,
            aes_key_template(256, label=key_id, key_id=key_id, sensitive=False, extractable=True),
        )
    sealed = await hsm.encrypt(slot, key_id, GCM, b"replaced")
    key = await aes_value(hsm, slot, key_id)
    assert len(key) == 32 and sealed.iv is not None and sealed.tag is not None
    assert AESGCM(key).decrypt(sealed.iv, sealed.ciphertext + sealed.tag, None) == b"replaced"


async def test_cache_is_cleared_after_a_new_login(
    hsm: Pkcs11Hsm, slot: int, module: Module
) -> None:
    key_id = await aes_key(hsm, slot)
    await hsm.encrypt(slot, key_id, GCM, b"warm")
    state = hsm.slot_state(slot)
    generation = state.pool.login_generation
    raw = module.open_session(slot)
    try:
        raw.logout()  # logs the whole application out of the token, behind the pool's back
    finally:
        raw.close()
    sealed = await hsm.encrypt(slot, key_id, GCM, b"after logout")
    assert state.pool.login_generation > generation
    assert await hsm.decrypt(slot, key_id, GCM, wire(sealed)) == (b"after logout")


# -- concurrency and cancellation ---------------------------------------------------------------


async def test_many_concurrent_tasks(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = await aes_key(hsm, slot)
    key = AESGCM(await aes_value(hsm, slot, key_id))
    failures: list[str] = []

    async def worker(n: int) -> None:
        for i in range(40):
            plain = os.urandom(4096)
            aad = f"{n}/{i}".encode()
            sealed = await hsm.encrypt(slot, key_id, GCM, plain, aad=aad)
            assert sealed.iv is not None and sealed.tag is not None
            if key.decrypt(sealed.iv, sealed.ciphertext + sealed.tag, aad) != plain:
                failures.append(f"{n}/{i} encrypt")
            joined = wire(sealed)
            if i % 4 == 0 and await hsm.decrypt(slot, key_id, GCM, joined, aad=aad) != plain:
                failures.append(f"{n}/{i} decrypt")

    async with anyio.create_task_group() as group:
        for n in range(32):
            group.start_soon(worker, n)
    assert failures == []
    assert hsm.slot_state(slot).pool.open_sessions <= 4


async def test_cancelled_large_encrypt_leaves_the_pool_clean(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = await aes_key(hsm, slot)
    state = hsm.slot_state(slot)
    await hsm.encrypt(slot, key_id, GCM, b"warm")
    sessions = state.pool.open_sessions
    big = bytearray(64 << 20)
    with anyio.move_on_after(0.05) as scope:
        await hsm.encrypt(slot, key_id, GCM, big)
    assert scope.cancelled_caught  # the cancellation was raised, after the worker finished
    assert state.pool.open_sessions == sessions
    # Every pooled session is idle with no operation active, and encrypts.
    idle = [state.pool.acquire(0) for _ in range(state.pool.idle_sessions)]
    try:
        assert idle and not any(session.operation_active for session in idle)
        handle = state._cache[(key_id.encode(), "aes")]
        for session in idle:
            assert len(hsm_ops.encrypt(session, handle, GCM, b"next").ciphertext) == 4
    finally:
        for session in idle:
            state.pool.release(session)
    sealed = await hsm.encrypt(slot, key_id, GCM, b"after")
    assert await hsm.decrypt(slot, key_id, GCM, wire(sealed)) == (b"after")
    assert state.pool.open_sessions == sessions


async def test_cancelled_queued_job_is_dropped(token: SoftHsmToken, slot: int) -> None:
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}, pool_size=1) as hsm:
        key_id = await aes_key(hsm, slot)
        big = bytearray(32 << 20)
        done: list[float] = []

        async def large() -> None:
            await hsm.encrypt(slot, key_id, GCM, big)
            done.append(time.perf_counter())

        dispatcher = hsm.slot_state(slot).dispatcher
        async with anyio.create_task_group() as group:
            group.start_soon(large)
            with anyio.fail_after(30):  # a watchdog, not a timing assertion
                while not dispatcher._busy:  # until the single worker runs the large job
                    await anyio.sleep(0.001)
            with anyio.move_on_after(0.01) as scope:
                await hsm.encrypt(slot, key_id, GCM, b"queued behind")
            cancelled_at = time.perf_counter()
        assert scope.cancelled_caught
        assert done and cancelled_at < done[0]  # dropped at once, not run after the large one


# -- labels, dates, randomness ------------------------------------------------------------------


async def test_label_rotation_metadata(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = await aes_key(hsm, slot)
    await hsm.encrypt(slot, key_id, GCM, b"warm")
    label = f"hsm::softhsm::{slot}::{key_id}::7::{key_id}@latest"
    await hsm.set_key_label(slot, key_id, label)
    metadata = await hsm.get_key_metadata(slot, key_id)
    assert metadata is not None
    assert metadata.id == key_id  # CKA_ID wins over the label
    assert metadata.rotate_name == f"hsm::softhsm::{slot}::{key_id}"
    assert metadata.rotate_generation == 7
    by_label = await hsm.get_key_metadata(slot, label)
    assert by_label == metadata
    await hsm.set_key_label(slot, key_id, "plain")
    metadata = await hsm.get_key_metadata(slot, key_id)
    assert metadata is not None and metadata.rotate_name is None


async def test_key_dates_round_trip(hsm: Pkcs11Hsm, slot: int) -> None:
    # A public (CKA_PRIVATE false) key: SoftHSM2 2.6 cannot read back the dates of private
    # objects (SoftHSMv2 issue 655), which then read as None.
    key_id = unique("dated")
    with hsm.slot_state(slot).pool.session() as session:
        session.generate_key(
            ck.CKM_AES_KEY_GEN,
            aes_key_template(128, label=key_id, key_id=key_id, extra=[(ck.CKA_PRIVATE, False)]),
        )
    start, end = datetime.date(2025, 1, 31), datetime.date(2030, 12, 1)
    await hsm.set_key_dates(slot, key_id, start, end)
    metadata = await hsm.get_key_metadata(slot, key_id)
    assert metadata is not None and (metadata.start_date, metadata.end_date) == (start, end)
    await hsm.set_key_dates(slot, key_id, None, end)
    metadata = await hsm.get_key_metadata(slot, key_id)
    assert metadata is not None and (metadata.start_date, metadata.end_date) == (None, end)
    await hsm.set_key_dates(slot, key_id, None, None)
    metadata = await hsm.get_key_metadata(slot, key_id)
    assert metadata is not None and (metadata.start_date, metadata.end_date) == (None, None)

    private = await aes_key(hsm, slot)
    await hsm.set_key_dates(slot, private, start, end)
    metadata = await hsm.get_key_metadata(slot, private)
    assert metadata is not None and metadata.key_length_in_bits == 256  # still described


def test_ck_date_parsing() -> None:
    assert format_ck_date(datetime.date(2024, 2, 29)) == b"20240229"
    assert format_ck_date(None) == b""
    assert parse_ck_date(b"20240229") == datetime.date(2024, 2, 29)
    for empty in (None, b"", b"\0" * 8, b"00000000", b"2024022", b"20241399", b"abcdefgh"):
        assert parse_ck_date(empty) is None


async def test_random(hsm: Pkcs11Hsm, slot: int) -> None:
    first, second = await hsm.generate_random(slot, 32), await hsm.generate_random(slot, 32)
    assert len(first) == len(second) == 32 and first != second
    assert await hsm.generate_random(slot, 0) == b""
    with pytest.raises(InvalidRequestError):
        await hsm.generate_random(slot, -1)
    await hsm.seed_random(slot, b"")  # no-op
    await hsm.seed_random(slot, os.urandom(32))  # SoftHSM2 accepts seeding


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_bare_asyncio_cancel_waits_for_the_running_job(hsm: Pkcs11Hsm, slot: int) -> None:
    """``task.cancel()`` outside any anyio scope, twice: the task still waits for its job."""

    key_id = await aes_key(hsm, slot)
    state = hsm.slot_state(slot)
    sessions = state.pool.open_sessions
    task = asyncio.get_running_loop().create_task(
        hsm.encrypt(slot, key_id, GCM, bytearray(32 << 20))
    )
    await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state.pool.open_sessions == sessions
    assert not any(session.operation_active for session in state.pool._idle)
    sealed = await hsm.encrypt(slot, key_id, GCM, b"next")
    assert await hsm.decrypt(slot, key_id, GCM, wire(sealed)) == b"next"


async def test_slow_jobs_spread_over_workers(hsm: Pkcs11Hsm, slot: int) -> None:
    """Latency-bound jobs (a network HSM's round trip: no CPU, no GIL) run side by side, up to
    the pool size, instead of one batch after another on one worker."""
    state = hsm.slot_state(slot)
    running = 0
    most = 0
    lock = threading.Lock()

    def round_trip(session: object) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.005)
        with lock:
            running -= 1

    await hsm.generate_random(slot, 1)  # logged in, one worker
    for _ in range(3):  # learn that these jobs are slow
        await hsm._run(state, round_trip, cost=0)
    most = 0
    async with anyio.create_task_group() as group:
        for _ in range(32):
            group.start_soon(hsm._run, state, round_trip)
    assert state.dispatcher.workers >= 2
    assert most >= 2  # jobs ran side by side, not one after the other


# -- review regressions -------------------------------------------------------------------------


async def test_pk_fallback_only_reaches_an_rsa_public_key(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = await aes_key(hsm, slot)
    # "<id>_pk" does not exist: the fallback must not reach the AES key "<id>".
    assert await hsm.export(slot, key_id + "_pk") is None
    with pytest.raises(InvalidRequestError, match="Object not found"):
        await hsm.delete(slot, key_id + "_pk")
    assert await hsm.get_key_type(slot, key_id) == KeyType.AES_KEY
    sk = unique("rsa")
    await hsm.create_keypair(slot, sk, sk, HsmKeypairAlgorithm.RSA, 2048, False)
    # A public key stored under the private key's id is found through "<id>_pk".
    assert await hsm.get_key_type(slot, sk + "_pk") == KeyType.RSA_PUBLIC_KEY
    await hsm.delete(slot, sk + "_pk")
    assert await hsm.get_key_type(slot, sk) == KeyType.RSA_PRIVATE_KEY
    with pytest.raises(InvalidRequestError, match="Object not found"):
        await hsm.delete(slot, sk + "_pk")  # a second delete must not take the private key
    assert await hsm.get_key_type(slot, sk) == KeyType.RSA_PRIVATE_KEY


BAD_CALLS = [
    ("encrypt data None", lambda h, s, k: h.encrypt(s, k, GCM, None)),
    ("encrypt data str", lambda h, s, k: h.encrypt(s, k, GCM, "text")),
    ("encrypt aad str", lambda h, s, k: h.encrypt(s, k, GCM, b"x", aad="a")),
    ("encrypt algorithm str", lambda h, s, k: h.encrypt(s, k, "AES_GCM", b"x")),
    ("decrypt data int", lambda h, s, k: h.decrypt(s, k, GCM, 5)),
    ("key id int", lambda h, s, k: h.get_key_type(s, 5)),
    ("key id None", lambda h, s, k: h.export(s, None)),
    ("key id empty", lambda h, s, k: h.create_key(s, "", HsmKeyAlgorithm.AES, 256, False)),
    ("key id surrogate", lambda h, s, k: h.get_key_type(s, "\ud800")),
    ("slot list", lambda h, s, k: h.get_key_type([s], k)),
    ("slot str", lambda h, s, k: h.find(str(s), HsmObjectFilter.ANY)),
    ("filter str", lambda h, s, k: h.find(s, "ANY")),
    ("random None", lambda h, s, k: h.generate_random(s, None)),
    ("random float", lambda h, s, k: h.generate_random(s, 1.5)),
    ("random huge", lambda h, s, k: h.generate_random(s, 2**40)),
    ("random negative", lambda h, s, k: h.generate_random(s, -1)),
    ("seed str", lambda h, s, k: h.seed_random(s, "seed")),
    ("dates str", lambda h, s, k: h.set_key_dates(s, k, "2024-01-01", None)),
    ("label None", lambda h, s, k: h.set_key_label(s, k, None)),
    ("sign data None", lambda h, s, k: h.sign(s, k, SigningAlgorithm.SHA256_WITH_RSA, None)),
    ("bits str", lambda h, s, k: h.create_key(s, "x", HsmKeyAlgorithm.AES, "256", False)),
]


@pytest.mark.parametrize(("name", "call"), BAD_CALLS, ids=[name for name, _ in BAD_CALLS])
async def test_bad_arguments_raise_invalid_request(
    hsm: Pkcs11Hsm, slot: int, name: str, call: object
) -> None:
    key_id = await aes_key(hsm, slot)
    with pytest.raises(InvalidRequestError):
        await call(hsm, slot, key_id)  # type: ignore[operator]
    assert await hsm.get_key_type(slot, key_id) == KeyType.AES_KEY


def test_cancelled_task_raises_its_cancellation_not_the_jobs_error(
    token: SoftHsmToken, slot: int
) -> None:
    async def main() -> None:
        async with Pkcs11Hsm(token.module, {slot: token.user_pin}, pool_size=2) as hsm:
            key_id = unique("aes")
            await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, False)
            bad = os.urandom(12 + (8 << 20) + 16)  # a long decrypt that fails its tag check
            for _ in range(5):
                task = asyncio.ensure_future(hsm.decrypt(slot, key_id, GCM, bad))
                await asyncio.sleep(0.01)  # the job is running in a worker by now
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(main())
