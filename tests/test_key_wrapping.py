"""Keys of the default store wrapped by an HSM key-encryption key, through the router.

Real parts only: a SoftHSM2 token (sensitive KEKs made by ``Pkcs11Hsm``) and LMDB files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kms_iface import (
    Create,
    CryptoAlgorithm,
    EncryptedContent,
    HsmKeyAlgorithm,
    HsmKeypairAlgorithm,
    InvalidRequestError,
    KeyMetadata,
    KeyType,
    NotSupportedError,
    UnauthorizedError,
    UpdateObject,
    Upsert,
)
from kms_iface.database import Database
from kms_iface.hsm_store import HsmStore
from kms_iface.kmip import (
    Attributes,
    ByteStringKeyMaterial,
    CryptographicAlgorithm,
    EncryptionKeyInformation,
    KeyBlock,
    KeyFormatType,
    KeyWrappingData,
    KmipOperation,
    Object,
    ObjectType,
    PlainKeyValue,
    PrivateKey,
    PublicKey,
    SecretData,
    SecretDataType,
    State,
    SymmetricKey,
    TransparentRSAPrivateKey,
    TransparentRSAPublicKey,
    TransparentSymmetricKey,
    WrappingMethod,
    symmetric_key_object,
    wrapped_object,
)
from kms_iface.oracle import Data, EncryptionOracle
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11_hsm import Pkcs11Hsm
from kms_iface.secrets import SecretBytes
from kms_iface.stores import LmdbStore
from tests.store_conformance.model import OWNER, STRANGER, key_attributes

PREFIX = "hsm"
ADMIN = "hsm-admin@example.org"
BOTH = (KmipOperation.Encrypt, KmipOperation.Decrypt)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Setup:
    db: Database
    hsm: Pkcs11Hsm
    slot: int
    store: LmdbStore
    path: Path

    def kek(self, key_id: str) -> str:
        return f"{PREFIX}::{self.slot}::{key_id}"

    async def aes_kek(self, grant: Iterable[KmipOperation] = BOTH) -> str:
        """A sensitive HSM AES key; OWNER may use it for ``grant``."""
        key_id = f"kek-{uuid.uuid4().hex}"
        await self.hsm.create_key(self.slot, key_id, HsmKeyAlgorithm.AES, 256, True)
        await self.db.grant_operations(self.kek(key_id), OWNER, set(grant))
        return self.kek(key_id)

    async def rsa_kek(self) -> str:
        key_id = f"rsa-kek-{uuid.uuid4().hex}"
        await self.hsm.create_keypair(
            self.slot, key_id, key_id + "_pk", HsmKeypairAlgorithm.RSA, 2048, True
        )
        await self.db.grant_operations(self.kek(key_id), OWNER, set(BOTH))
        return self.kek(key_id)


async def _setup(
    tmp_path: Path, token: SoftHsmToken, slot: int, **options: object
) -> AsyncIterator[Setup]:
    """A router over an LMDB store, with the test token as an HsmStore (ADMIN is its admin)."""
    store = LmdbStore(tmp_path / "store")
    db = Database(store, store, **options)  # type: ignore[arg-type]
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}) as hsm, db:
        hsm_store = HsmStore(hsm, [ADMIN], "cosmian", PREFIX)
        db.register_objects_store(PREFIX, hsm_store)
        db.register_encryption_oracle(PREFIX, hsm_store)
        yield Setup(db, hsm, slot, store, tmp_path / "store")


@pytest.fixture
async def setup(
    anyio_backend: str, tmp_path: Path, token: SoftHsmToken, slot: int
) -> AsyncIterator[Setup]:
    async for ready in _setup(tmp_path, token, slot, unwrap_cache_size=8):
        yield ready


def aes_key(label: str) -> tuple[bytes, SymmetricKey]:
    """A fresh random AES-256 key (``label`` only names it in the test)."""
    key = os.urandom(32)
    return key, symmetric_key_object(key, key_attributes())


def rsa_private_key(key: rsa.RSAPrivateKey) -> tuple[PrivateKey, Attributes]:
    numbers = key.private_numbers()

    def b(value: int) -> bytes:
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    attributes = Attributes(
        cryptographic_algorithm=CryptographicAlgorithm.RSA,
        cryptographic_length=2048,
        key_format_type=KeyFormatType.TransparentRSAPrivateKey,
        object_type=ObjectType.PrivateKey,
    )
    material = TransparentRSAPrivateKey(
        modulus=b(numbers.public_numbers.n),
        public_exponent=b(numbers.public_numbers.e),
        private_exponent=SecretBytes(b(numbers.d)),
        p=SecretBytes(b(numbers.p)),
        q=SecretBytes(b(numbers.q)),
        prime_exponent_p=SecretBytes(b(numbers.dmp1)),
        prime_exponent_q=SecretBytes(b(numbers.dmq1)),
        crt_coefficient=SecretBytes(b(numbers.iqmp)),
    )
    obj = PrivateKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentRSAPrivateKey,
            key_value=PlainKeyValue(key_material=material, attributes=attributes),
            cryptographic_algorithm=CryptographicAlgorithm.RSA,
            cryptographic_length=2048,
        )
    )
    return obj, attributes


def key_bytes(obj: Object) -> bytes:
    value = obj.key_block().key_value
    assert isinstance(value, PlainKeyValue)
    assert isinstance(value.key_material, TransparentSymmetricKey)
    return bytes(value.key_material.key)


async def stored_bytes(db: Database, uid: str) -> bytes:
    found = await db.default_store.retrieve(uid)
    assert found is not None
    value = found.object.key_block().key_value
    assert isinstance(value, bytes)
    return value


class CountingOracle(EncryptionOracle):
    """A real oracle, with its decryptions counted (to see the cache at work)."""

    def __init__(self, inner: EncryptionOracle) -> None:
        self.inner = inner
        self.decrypts = 0

    async def encrypt(
        self,
        uid: str,
        data: Data,
        cryptographic_algorithm: CryptoAlgorithm | None = None,
        authenticated_encryption_additional_data: bytes | None = None,
    ) -> EncryptedContent:
        return await self.inner.encrypt(
            uid, data, cryptographic_algorithm, authenticated_encryption_additional_data
        )

    async def decrypt(
        self,
        uid: str,
        data: Data,
        cryptographic_algorithm: CryptoAlgorithm | None = None,
        authenticated_encryption_additional_data: bytes | None = None,
    ) -> SecretBytes:
        self.decrypts += 1
        return await self.inner.decrypt(
            uid, data, cryptographic_algorithm, authenticated_encryption_additional_data
        )

    async def get_key_type(self, uid: str) -> KeyType | None:
        return await self.inner.get_key_type(uid)

    async def get_key_metadata(self, uid: str) -> KeyMetadata | None:
        return await self.inner.get_key_metadata(uid)


# --------------------------------------------------------------------------------------------
# wrap_key / unwrap_key
# --------------------------------------------------------------------------------------------


async def test_an_aes_kek_wraps_with_gcm_and_unwraps(setup: Setup) -> None:
    kek = await setup.aes_kek()
    key, obj = aes_key("a")
    uid = await setup.db.create(None, OWNER, obj, key_attributes(), {"team"})
    await setup.db.wrap_key(uid, kek, OWNER)

    found = await setup.db.retrieve(uid)
    assert found is not None and found.object.is_wrapped()
    assert found.object.wrapping_key_uid() == kek
    assert found.attributes == key_attributes()
    assert await setup.db.retrieve_tags(uid) == {"team"}
    assert len(await stored_bytes(setup.db, uid)) == 12 + 32 + 16  # iv ‖ ct ‖ tag
    assert key not in await stored_bytes(setup.db, uid)
    assert [found[0] for found in await setup.db.find_wrapped_by(kek, OWNER)] == [uid]

    with await setup.db.unwrap_key(uid, OWNER) as material:
        assert bytes(material) == key


async def test_an_rsa_private_key_is_wrapped_as_pkcs1_der(setup: Setup) -> None:
    kek = await setup.aes_kek()
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    obj, attributes = rsa_private_key(private)
    uid = await setup.db.create(None, OWNER, obj, attributes, ())
    await setup.db.wrap_key(uid, kek, OWNER)
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    with await setup.db.unwrap_key(uid, OWNER) as material:
        assert bytes(material) == der


async def test_an_rsa_kek_wraps_with_oaep_through_its_public_key(setup: Setup) -> None:
    kek = await setup.rsa_kek()
    key, obj = aes_key("r")
    uid = await setup.db.create(None, OWNER, obj, key_attributes(), ())
    await setup.db.wrap_key(uid, kek, OWNER)
    assert len(await stored_bytes(setup.db, uid)) == 256
    found = await setup.db.retrieve(uid)
    assert found is not None
    info = found.object.key_block().key_wrapping_data
    assert info is not None and info.encryption_key_information is not None
    parameters = info.encryption_key_information.cryptographic_parameters
    assert parameters is not None and parameters.hashing_algorithm is not None
    assert parameters.hashing_algorithm.name == "SHA1"
    with await setup.db.unwrap_key(uid, OWNER) as material:
        assert bytes(material) == key


async def test_an_rsa_kek_refuses_more_than_its_oaep_capacity(setup: Setup) -> None:
    kek = await setup.rsa_kek()
    obj, attributes = rsa_private_key(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    uid = await setup.db.create(None, OWNER, obj, attributes, ())
    before = await setup.db.default_store.retrieve(uid)
    with pytest.raises(InvalidRequestError, match="at most 214 bytes"):
        await setup.db.wrap_key(uid, kek, OWNER)
    assert await setup.db.default_store.retrieve(uid) == before


async def test_wrap_key_refusals_leave_the_key_as_it_was(setup: Setup) -> None:
    kek = await setup.aes_kek()
    _, obj = aes_key("x")
    uid = await setup.db.create(None, OWNER, obj, key_attributes(), ())
    admins_uid = await setup.db.create(None, ADMIN, aes_key("y")[1], key_attributes(), ())
    before = await setup.db.default_store.retrieve(uid)
    cases: list[tuple[str, str, str, type[Exception], str]] = [
        (uid, kek, STRANGER, UnauthorizedError, f"The key {uid} is not owned by {STRANGER}"),
        ("missing", kek, OWNER, InvalidRequestError, "The key missing does not exist"),
        # Without a right on a KEK, nobody learns whether it exists.
        (uid, kek + "_pk", OWNER, UnauthorizedError, "may not use the key-encryption key"),
        (uid, setup.kek("nope"), OWNER, UnauthorizedError, "an owner or a Encrypt grant"),
        (admins_uid, kek + "_pk", ADMIN, InvalidRequestError, "does not exist"),
        (admins_uid, setup.kek("nope"), ADMIN, InvalidRequestError, "does not exist"),
        (uid, "hsm::utimaco::0::k", OWNER, InvalidRequestError, "slot_id must be a valid"),
        (uid, "other::0::k", OWNER, InvalidRequestError, "No encryption oracle holds"),
        (uid, "plain-uid", OWNER, InvalidRequestError, "No encryption oracle holds"),
        (uid, "", OWNER, InvalidRequestError, "non-empty"),
    ]
    for key_uid, kek_uid, user, error, message in cases:
        with pytest.raises(error, match=message):
            await setup.db.wrap_key(key_uid, kek_uid, user)
    assert await setup.db.default_store.retrieve(uid) == before


async def test_the_kek_rights_are_checked_for_each_direction(setup: Setup) -> None:
    encrypt_only = await setup.aes_kek(grant=[KmipOperation.Encrypt])
    nothing = await setup.aes_kek(grant=[])
    key, obj = aes_key("r")
    uid = await setup.db.create(None, OWNER, obj, key_attributes(), ())
    with pytest.raises(UnauthorizedError, match="an owner or a Encrypt grant is needed"):
        await setup.db.wrap_key(uid, nothing, OWNER)
    await setup.db.wrap_key(uid, encrypt_only, OWNER)
    with pytest.raises(UnauthorizedError, match="an owner or a Decrypt grant is needed"):
        await setup.db.unwrap_key(uid, OWNER)
    await setup.db.grant_operations(encrypt_only, OWNER, {KmipOperation.Decrypt})
    with await setup.db.unwrap_key(uid, OWNER) as material:
        assert material == key


async def test_a_forged_wrapped_key_does_not_make_the_hsm_decrypt_for_anyone(
    setup: Setup,
) -> None:
    """The KEK a stored object names is the client's choice: the right to use it is checked."""
    kek = await setup.aes_kek(grant=[])
    oracle = setup.db.encryption_oracle(kek)
    assert oracle is not None
    secret = await oracle.encrypt(kek, b"the admin's secret", CryptoAlgorithm.AES_GCM)
    blob = (secret.iv or b"") + secret.ciphertext + (secret.tag or b"")
    forged = wrapped_object(symmetric_key_object(bytes(32)), blob, kek)
    uid = await setup.db.create(None, OWNER, forged, key_attributes(), ())
    with pytest.raises(UnauthorizedError, match="may not use the key-encryption key"):
        await setup.db.unwrap_key(uid, OWNER)


async def test_an_rsa_public_kek_is_refused_by_name(setup: Setup) -> None:
    kek = await setup.rsa_kek()
    _, obj = aes_key("p")
    uid = await setup.db.create(None, ADMIN, obj, key_attributes(), ())
    with pytest.raises(InvalidRequestError, match="is an RSA public key: name its private key"):
        await setup.db.wrap_key(uid, kek + "_pk", ADMIN)


async def test_an_unrouted_hsm_kek_gets_the_routers_error(
    tmp_path: Path, anyio_backend: str
) -> None:
    store = LmdbStore(tmp_path / "s")
    async with Database(store, store) as db:
        uid = await db.create(None, OWNER, aes_key("u")[1], key_attributes(), ())
        with pytest.raises(InvalidRequestError, match="No HSM is configured for UID 'hsm::0::k'"):
            await db.wrap_key(uid, "hsm::0::k", OWNER)


async def test_a_wrapped_key_is_not_wrapped_twice_nor_unwrapped_plain(setup: Setup) -> None:
    kek = await setup.aes_kek()
    _, obj = aes_key("t")
    uid = await setup.db.create(None, OWNER, obj, key_attributes(), ())
    with pytest.raises(InvalidRequestError, match=f"The key {uid} is not wrapped"):
        await setup.db.unwrap_key(uid, OWNER)
    await setup.db.wrap_key(uid, kek, OWNER)
    with pytest.raises(InvalidRequestError, match=f"already wrapped by {kek}"):
        await setup.db.wrap_key(uid, await setup.aes_kek(), OWNER)
    with pytest.raises(UnauthorizedError):
        await setup.db.unwrap_key(uid, STRANGER)


async def test_only_keys_of_the_default_store_are_wrapped(setup: Setup, tmp_path: Path) -> None:
    other = LmdbStore(tmp_path / "other")
    await other.open()
    setup.db.register_objects_store("ext", other)
    await setup.db.create("ext::k", OWNER, aes_key("e")[1], key_attributes(), ())
    with pytest.raises(InvalidRequestError, match="Only keys of the default store"):
        await setup.db.wrap_key("ext::k", await setup.aes_kek(), OWNER)


async def test_unwrap_fails_clearly_once_the_kek_is_gone(setup: Setup) -> None:
    kek = await setup.aes_kek()
    _, obj = aes_key("g")
    uid = await setup.db.create(None, OWNER, obj, key_attributes(), ())
    await setup.db.wrap_key(uid, kek, OWNER)
    await setup.db.unwrap_key(uid, OWNER)  # now in the unwrap cache
    await setup.db.delete(kek)  # through the router: it forgets every unwrapped key
    with pytest.raises(
        InvalidRequestError, match=f"Cannot unwrap {uid}: its key-encryption key {kek} does not"
    ):
        await setup.db.unwrap_key(uid, OWNER)


async def test_unwrap_of_tampered_bytes_is_a_clear_error(setup: Setup) -> None:
    kek = await setup.aes_kek()
    _, obj = aes_key("m")
    uid = await setup.db.create(None, OWNER, obj, key_attributes(), ())
    await setup.db.wrap_key(uid, kek, OWNER)
    found = await setup.db.default_store.retrieve(uid)
    assert found is not None
    wrapped = bytearray(await stored_bytes(setup.db, uid))
    wrapped[20] ^= 1
    block = msgspec.structs.replace(found.object.key_block(), key_value=bytes(wrapped))
    tampered = msgspec.structs.replace(found.object, block=block)
    await setup.db.default_store.update_object(uid, tampered, found.attributes)
    with pytest.raises(InvalidRequestError, match=f"Cannot unwrap {uid} with its key-encryption"):
        await setup.db.unwrap_key(uid, OWNER)


async def test_the_cache_spares_the_hsm_and_follows_the_stored_object(
    anyio_backend: str, tmp_path: Path, token: SoftHsmToken, slot: int
) -> None:
    async for setup in _setup(tmp_path, token, slot, unwrap_cache_size=2):
        counting = CountingOracle(setup.db.unregister_encryption_oracle(PREFIX))
        setup.db.register_encryption_oracle(PREFIX, counting)
        kek = await setup.aes_kek()
        keys = {}
        for seed in "abc":
            key, obj = aes_key(seed)
            uid = await setup.db.create(None, OWNER, obj, key_attributes(), ())
            await setup.db.wrap_key(uid, kek, OWNER)
            keys[uid] = key
        first, second, third = keys
        for uid in (first, first, second, first):
            with await setup.db.unwrap_key(uid, OWNER) as material:
                assert bytes(material) == keys[uid]
        assert counting.decrypts == 2  # one per key; repeats came from the cache
        await setup.db.unwrap_key(third, OWNER)  # evicts the least recent: second
        await setup.db.unwrap_key(second, OWNER)
        assert counting.decrypts == 4

        key, obj = aes_key("new")
        await setup.db.update_object(first, obj, key_attributes())
        await setup.db.wrap_key(first, kek, OWNER)
        with await setup.db.unwrap_key(first, OWNER) as material:
            assert bytes(material) == key  # the new key, not the cached old one


# --------------------------------------------------------------------------------------------
# Protection at rest
# --------------------------------------------------------------------------------------------


def files_hold(path: Path, secret: bytes) -> bool:
    return any(secret in file.read_bytes() for file in path.iterdir() if file.is_file())


async def test_without_protection_the_files_hold_the_key(setup: Setup) -> None:
    key, obj = aes_key("plain")
    await setup.db.create(None, OWNER, obj, key_attributes(), ())
    assert files_hold(setup.path, key)  # the scan below can see a key when there is one


async def test_protection_at_rest_wraps_every_key_written(
    anyio_backend: str, tmp_path: Path, token: SoftHsmToken, slot: int
) -> None:
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}) as hsm:
        kek_id = f"rest-{uuid.uuid4().hex}"
        await hsm.create_key(slot, kek_id, HsmKeyAlgorithm.AES, 256, True)
    kek = f"{PREFIX}::{slot}::{kek_id}"
    async for setup in _setup(tmp_path, token, slot, key_encryption_key=kek):
        db = setup.db
        created, obj = aes_key("c")
        uid = await db.create(None, OWNER, obj, key_attributes(), {"t"})
        batch, batch_obj = aes_key("b")
        updated, updated_obj = aes_key("u")
        [batch_uid] = await db.atomic(
            OWNER, [Create("batch-key", batch_obj, key_attributes(), {"t"})]
        )
        await db.atomic(OWNER, [UpdateObject(uid, updated_obj, key_attributes(), None)])
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        rsa_obj, rsa_attributes = rsa_private_key(private)
        rsa_uid = await db.create(None, OWNER, rsa_obj, rsa_attributes, ())

        for stored_uid in (uid, batch_uid, rsa_uid):
            raw = await db.default_store.retrieve(stored_uid)
            assert raw is not None and raw.object.wrapping_key_uid() == kek
        got = await db.retrieve(uid)
        assert got is not None and not got.object.is_wrapped()
        # The key block comes back whole; its embedded attributes are the stored attributes.
        assert key_bytes(got.object) == updated
        assert got.object.attributes() == got.attributes
        by_tags = await db.retrieve_objects('["t"]')
        assert set(by_tags) == {uid, batch_uid}
        assert key_bytes(by_tags[batch_uid].object) == batch
        got_rsa = await db.retrieve(rsa_uid)
        assert got_rsa is not None and got_rsa.object.key_block().key_format_type == (
            KeyFormatType.TransparentRSAPrivateKey
        )
        numbers = private.private_numbers()
        material = got_rsa.object.key_block().key_value
        assert isinstance(material, PlainKeyValue)
        assert isinstance(material.key_material, TransparentRSAPrivateKey)
        assert int.from_bytes(bytes(material.key_material.private_exponent or b""), "big") == (
            numbers.d
        )
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    for secret in (created, batch, updated, der, numbers.d.to_bytes(256, "big").lstrip(b"\0")):
        assert not files_hold(tmp_path / "store", secret)


async def test_protection_at_rest_refuses_what_it_cannot_wrap(
    anyio_backend: str, tmp_path: Path, token: SoftHsmToken, slot: int
) -> None:
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}) as hsm:
        kek_id = f"rest-{uuid.uuid4().hex}"
        await hsm.create_key(slot, kek_id, HsmKeyAlgorithm.AES, 256, True)
    kek = f"{PREFIX}::{slot}::{kek_id}"
    async for setup in _setup(tmp_path, token, slot, key_encryption_key=kek):
        secret = os.urandom(24)
        data = SecretData(
            secret_data_type=SecretDataType.Password,
            block=KeyBlock(
                key_format_type=KeyFormatType.Opaque,
                key_value=PlainKeyValue(
                    key_material=ByteStringKeyMaterial(value=SecretBytes(secret))
                ),
            ),
        )
        with pytest.raises(NotSupportedError, match=r"Protection at rest .* cannot wrap"):
            await setup.db.create("secret", OWNER, data, Attributes(), ())
        assert await setup.db.retrieve("secret") is None
        assert not files_hold(tmp_path / "store", secret)

        public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        n = public.public_numbers()
        pub = PublicKey(
            block=KeyBlock(
                key_format_type=KeyFormatType.TransparentRSAPublicKey,
                key_value=PlainKeyValue(
                    key_material=TransparentRSAPublicKey(
                        modulus=n.n.to_bytes(256, "big"), public_exponent=b"\x01\x00\x01"
                    )
                ),
            )
        )
        await setup.db.create("public", OWNER, pub, Attributes(), ())
        found = await setup.db.default_store.retrieve("public")
        assert found is not None and not found.object.is_wrapped()


def test_a_bad_key_encryption_key_setting_is_refused(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "s")
    for bad in ("", b"kek", 3):
        with pytest.raises(InvalidRequestError, match="key_encryption_key must be"):
            Database(store, store, key_encryption_key=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        Database(store, store, unwrap_cache_size=-1)


@pytest.fixture
async def at_rest(
    anyio_backend: str, tmp_path: Path, token: SoftHsmToken, slot: int
) -> AsyncIterator[Setup]:
    """A router whose default store is protected at rest by a sensitive HSM AES key."""
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}) as hsm:
        kek_id = f"rest-{uuid.uuid4().hex}"
        await hsm.create_key(slot, kek_id, HsmKeyAlgorithm.AES, 256, True)
    kek = f"{PREFIX}::{slot}::{kek_id}"
    async for setup in _setup(tmp_path, token, slot, key_encryption_key=kek, unwrap_cache_size=4):
        yield setup


def with_wrapping_data(obj: SymmetricKey, method: WrappingMethod, kek: str) -> SymmetricKey:
    """``obj`` claiming to be wrapped while its key value stays in the clear."""
    data = KeyWrappingData(
        wrapping_method=method, encryption_key_information=EncryptionKeyInformation(kek)
    )
    return msgspec.structs.replace(
        obj, block=msgspec.structs.replace(obj.block, key_wrapping_data=data)
    )


async def test_at_rest_upsert_and_update_are_wrapped_too(at_rest: Setup) -> None:
    first, obj = aes_key("one")
    uid = await at_rest.db.create(None, OWNER, obj, key_attributes(), ())
    second, replaced = aes_key("two")
    await at_rest.db.update_object(uid, replaced, key_attributes())
    third, upserted = aes_key("three")
    await at_rest.db.atomic(OWNER, [Upsert(uid, upserted, key_attributes(), None, State.PreActive)])
    found = await at_rest.db.retrieve(uid)
    assert found is not None and key_bytes(found.object) == third
    for secret in (first, second, third):
        assert not files_hold(at_rest.path, secret)


async def test_at_rest_refuses_keys_that_only_claim_to_be_wrapped(at_rest: Setup) -> None:
    kek = at_rest.db._kek
    assert kek is not None
    for method in (WrappingMethod.Encrypt, WrappingMethod.MACSign):
        key, obj = aes_key("claim")
        claiming = with_wrapping_data(obj, method, kek)
        with pytest.raises(NotSupportedError, match="leaves its key value in the clear"):
            await at_rest.db.create(None, OWNER, claiming, key_attributes(), ())
        assert not files_hold(at_rest.path, key)


async def test_at_rest_wrapped_bytes_do_not_unwrap_under_another_uid(at_rest: Setup) -> None:
    """The wrapping is bound to the uid: bytes copied from the files into a new object fail."""
    key, obj = aes_key("victim")
    victim = await at_rest.db.create(None, OWNER, obj, key_attributes(), ())
    stolen = await at_rest.db.default_store.retrieve(victim)
    assert stolen is not None and stolen.object.is_wrapped()
    await at_rest.db.create("copy", STRANGER, stolen.object, key_attributes(), ())
    with pytest.raises(InvalidRequestError, match="Cannot unwrap copy with its key-encryption"):
        await at_rest.db.retrieve("copy")
    found = await at_rest.db.retrieve(victim)
    assert found is not None and key_bytes(found.object) == key


async def test_at_rest_keeps_a_metadata_only_key_as_it_is(at_rest: Setup) -> None:
    _, obj = aes_key("m")
    uid = await at_rest.db.create(None, OWNER, obj, key_attributes(), ())
    emptied = msgspec.structs.replace(obj, block=msgspec.structs.replace(obj.block, key_value=None))
    await at_rest.db.update_object(uid, emptied, key_attributes())
    found = await at_rest.db.retrieve(uid)
    assert found is not None and found.object.key_block().key_value is None


async def test_at_rest_needs_an_aes_kek(
    anyio_backend: str, tmp_path: Path, token: SoftHsmToken, slot: int
) -> None:
    key_id = f"rest-rsa-{uuid.uuid4().hex}"
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}) as hsm:
        await hsm.create_keypair(slot, key_id, key_id + "_pk", HsmKeypairAlgorithm.RSA, 2048, True)
    kek = f"{PREFIX}::{slot}::{key_id}"
    async for setup in _setup(tmp_path, token, slot, key_encryption_key=kek):
        key, obj = aes_key("n")
        with pytest.raises(NotSupportedError, match="needs an AES key-encryption key"):
            await setup.db.create(None, OWNER, obj, key_attributes(), ())
        assert not files_hold(setup.path, key)


async def test_deleting_the_at_rest_kek_forgets_every_cached_key(at_rest: Setup) -> None:
    _, obj = aes_key("c")
    uid = await at_rest.db.create(None, OWNER, obj, key_attributes(), ())
    assert await at_rest.db.retrieve(uid) is not None  # unwrapped and cached
    kek = at_rest.db._kek
    assert kek is not None
    await at_rest.db.delete(kek)
    with pytest.raises(InvalidRequestError, match=f"its key-encryption key {kek} does not exist"):
        await at_rest.db.retrieve(uid)
