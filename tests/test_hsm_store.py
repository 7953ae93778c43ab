"""HsmStore on the real SoftHSM2 test token, under asyncio and trio: the HsmStore rules of
hsm-behaviour.md (admin gate, AES-only create, RSA pairs through atomic, the KMIP objects of
retrieve and their sensitive stubs, the refused or no-op updates, find's filters and slots, the
uid errors) and the oracle half it delegates to HsmEncryptionOracle.

Every key id is unique (the token outlives each test) and every key a test makes is destroyed
afterwards; "changes nothing" is checked by counting the token's objects.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms_iface import (
    CryptoAlgorithm,
    CryptoOracle,
    EncryptionOracle,
    HsmError,
    HsmKeyAlgorithm,
    HsmObjectFilter,
    InvalidRequestError,
    KeyType,
    NotSupportedError,
    ObjectsStore,
    UnauthorizedError,
)
from kms_iface.hsm_oracle import HsmEncryptionOracle
from kms_iface.hsm_store import HsmStore
from kms_iface.kmip import (
    ApplicationSpecificInformation,
    Attributes,
    CryptographicAlgorithm,
    CryptographicParameters,
    HashingAlgorithm,
    KeyBlock,
    KeyFormatType,
    Link,
    LinkType,
    Name,
    ObjectType,
    PrivateKey,
    PublicKey,
    State,
    SymmetricKey,
    TransparentRSAPrivateKey,
    TransparentRSAPublicKey,
    TransparentSymmetricKey,
    object_from_json,
    object_from_msgpack,
    object_to_json,
    object_to_msgpack,
    symmetric_key_object,
)
from kms_iface.pkcs11 import Module, Session
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11_hsm import Pkcs11Hsm
from kms_iface.stores.base import AtomicOperation, Create, Delete, UpdateObject, UpdateState, Upsert

from .conftest import count_objects

pytestmark = pytest.mark.anyio

ADMIN = "admin@example.org"
USER = "bob@example.org"
# The key bytes of the objects handed to create: the HSM must neither use nor echo them.
OBJECT_KEY = bytes(range(0xA0, 0xC0))
FORM = (
    "Invalid Request: An HSM request must have a uid in the form of "
    "'hsm::<slot_id>::<key_id>', got: {uid}"
)
SLOT = "Invalid Request: The slot_id must be a valid unsigned integer: {reason}"
ATOMIC = "Invalid Request: HSM atomic operations only support RSA keypair creations for now"
AES_MASK = 2108  # Encrypt | Decrypt | WrapKey | UnwrapKey | KeyAgreement
RSA_PRIVATE_MASK = 0x8 | 0x20 | 0x1  # Decrypt | UnwrapKey | Sign
RSA_PUBLIC_MASK = 0x4 | 0x10 | 0x2  # Encrypt | WrapKey | Verify


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def aes_object() -> SymmetricKey:
    return symmetric_key_object(OBJECT_KEY)


def aes_attributes(bits: int | None = 256, **extra: Any) -> Attributes:
    return Attributes(
        cryptographic_algorithm=CryptographicAlgorithm.AES, cryptographic_length=bits, **extra
    )


def rsa_private_object() -> PrivateKey:
    return PrivateKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentRSAPrivateKey,
            cryptographic_algorithm=CryptographicAlgorithm.RSA,
        )
    )


def rsa_public_object() -> PublicKey:
    return PublicKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentRSAPublicKey,
            cryptographic_algorithm=CryptographicAlgorithm.RSA,
        )
    )


def rsa_attributes(bits: int | None = 1024, **extra: Any) -> Attributes:
    return Attributes(
        cryptographic_algorithm=CryptographicAlgorithm.RSA, cryptographic_length=bits, **extra
    )


def expected_attributes(
    key_type: KeyType, bits: int, *, sensitive: bool = False, vendor_id: str = "cosmian"
) -> Attributes:
    """What retrieve and find must say of a key (the HsmStore rules, written out by hand)."""
    kinds = {
        KeyType.AES_KEY: (
            CryptographicAlgorithm.AES,
            ObjectType.SymmetricKey,
            KeyFormatType.TransparentSymmetricKey,
            AES_MASK,
            "_kk",
        ),
        KeyType.RSA_PRIVATE_KEY: (
            CryptographicAlgorithm.RSA,
            ObjectType.PrivateKey,
            KeyFormatType.TransparentRSAPrivateKey,
            RSA_PRIVATE_MASK,
            "_sk",
        ),
        KeyType.RSA_PUBLIC_KEY: (
            CryptographicAlgorithm.RSA,
            ObjectType.PublicKey,
            KeyFormatType.TransparentRSAPublicKey,
            RSA_PUBLIC_MASK,
            "_pk",
        ),
    }
    algorithm, object_type, key_format, mask, tag = kinds[key_type]
    attributes = Attributes(
        cryptographic_algorithm=algorithm,
        cryptographic_length=bits,
        cryptographic_usage_mask=mask,
        key_format_type=key_format,
        object_type=object_type,
        sensitive=sensitive,
    )
    attributes.set_tags(vendor_id, {tag})
    return attributes


@dataclass
class Env:
    """A store over the test token, with helpers that make keys and remember them."""

    hsm: Pkcs11Hsm
    store: HsmStore
    slot: int
    module: Module
    pin: str
    made: list[str] = field(default_factory=list)

    def uid(self, key_id: str) -> str:
        return f"hsm::{self.slot}::{key_id}"

    def fresh_uid(self, prefix: str = "k") -> str:
        uid = self.uid(unique(prefix))
        self.made += [uid, uid + "_pk"]  # whatever a test makes under it is destroyed after
        return uid

    def objects(self) -> int:
        return count_objects(self.module, self.slot, self.pin)

    async def aes(self, bits: int = 256, *, sensitive: bool = False) -> str:
        uid = self.fresh_uid("aes")
        attributes = aes_attributes(bits, sensitive=sensitive)
        assert await self.store.create(uid, ADMIN, aes_object(), attributes, set()) == uid
        return uid

    async def rsa(self, bits: int | None = 1024, *, sensitive: bool = False) -> tuple[str, str]:
        uid = self.fresh_uid("rsa")
        operations: list[AtomicOperation] = [
            Create(uid, rsa_private_object(), rsa_attributes(bits, sensitive=sensitive), set()),
            Create(uid + "_pk", rsa_public_object(), rsa_attributes(bits), set()),
        ]
        assert await self.store.atomic(ADMIN, operations) == [uid, uid + "_pk"]
        return uid, uid + "_pk"


@pytest.fixture
async def hsm(anyio_backend: str, token: SoftHsmToken, slot: int) -> AsyncIterator[Pkcs11Hsm]:
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}, pool_size=4) as h:
        yield h


@pytest.fixture
async def env(hsm: Pkcs11Hsm, slot: int, module: Module, token: SoftHsmToken) -> AsyncIterator[Env]:
    async with HsmStore(hsm, [ADMIN], "cosmian", "hsm") as store:
        e = Env(hsm, store, slot, module, token.user_pin)
        try:
            yield e
        finally:
            for uid in e.made:
                await store.delete(uid)


def store_with(env: Env, admins: list[str], vendor_id: str = "cosmian") -> HsmStore:
    return HsmStore(env.hsm, admins, vendor_id, "hsm")


async def no_key(env: Env, uid: str) -> bool:
    return await env.store.get_key_type(uid) is None


# --------------------------------------------------------------------------------------------
# Construction, contracts, life cycle
# --------------------------------------------------------------------------------------------


async def test_is_an_objects_store_and_a_crypto_oracle(env: Env) -> None:
    assert isinstance(env.store, ObjectsStore)
    assert isinstance(env.store, CryptoOracle) and isinstance(env.store, EncryptionOracle)
    assert env.store.hsm is env.hsm and env.store.prefix == "hsm"
    assert repr(env.store) == "HsmStore(Pkcs11Hsm, prefix='hsm')"


async def test_admins_must_be_a_collection(hsm: Pkcs11Hsm) -> None:
    with pytest.raises(InvalidRequestError) as info:
        HsmStore(hsm, "admin", "cosmian", "hsm")
    assert str(info.value) == (
        "Invalid Request: hsm_admins must be a collection of user names, not a str"
    )


async def test_closing_the_store_closes_its_hsm(
    anyio_backend: str, token: SoftHsmToken, slot: int
) -> None:
    hsm = Pkcs11Hsm(token.module, {slot: token.user_pin})
    async with HsmStore(hsm, [ADMIN], "cosmian", "hsm") as store:
        assert await store.get_key_type(f"hsm::{slot}::{unique('missing')}") is None
    await store.close()  # idempotent
    with pytest.raises(InvalidRequestError) as info:
        await hsm.generate_random(slot, 8)
    assert str(info.value) == "Invalid Request: the HSM is closed"


# --------------------------------------------------------------------------------------------
# create: admins only, AES only
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [128, 256])
@pytest.mark.parametrize("sensitive", [False, True])
async def test_create_aes_key(env: Env, bits: int, sensitive: bool) -> None:
    uid = await env.aes(bits, sensitive=sensitive)
    metadata = await env.store.get_key_metadata(uid)
    assert metadata is not None
    assert (metadata.key_type, metadata.key_length_in_bits) == (KeyType.AES_KEY, bits)
    assert metadata.sensitive is sensitive


@pytest.mark.parametrize(
    ("admins", "user"),
    [([ADMIN], ADMIN), (["someone", ADMIN], ADMIN), (["*"], USER), (["x", "*"], "anyone")],
)
async def test_admins_create(env: Env, admins: list[str], user: str) -> None:
    uid = env.fresh_uid()
    store = store_with(env, admins)
    assert await store.create(uid, user, aes_object(), aes_attributes(), []) == uid
    assert await env.store.get_key_type(uid) is KeyType.AES_KEY


@pytest.mark.parametrize(
    ("admins", "user"),
    [([ADMIN], USER), ([ADMIN], ADMIN.upper()), ([], ADMIN), (["**"], USER), (["admin"], "")],
)
async def test_non_admin_cannot_create(env: Env, admins: list[str], user: str) -> None:
    uid = env.fresh_uid()
    before = env.objects()
    with pytest.raises(UnauthorizedError) as info:
        await store_with(env, admins).create(uid, user, aes_object(), aes_attributes(), [])
    assert str(info.value) == "Unauthorized: Only the HSM Admin can create HSM objects"
    assert env.objects() == before and await no_key(env, uid)


NEEDS_UID = "Invalid Request: An HSM key needs a uid in the form of 'hsm::<slot_id>::<key_id>'"
ONLY_SYMMETRIC = "Invalid Request: Only symmetric keys can be created on the HSM in this server"
ONLY_AES = "Invalid Request: Only AES symmetric keys can be created on the HSM in this server"
NO_ALGORITHM = "Invalid Request: Create: HSM keys must have a cryptographic algorithm specified"
NO_LENGTH = "Invalid Request: Symmetric key must have a cryptographic length specified"
BAD_AES_LENGTH = "Invalid Request: Invalid key length: {} bits, for and HSM AES key"


@pytest.mark.parametrize(
    ("object_", "attributes", "message"),
    [
        (rsa_private_object(), aes_attributes(), ONLY_SYMMETRIC),
        (rsa_public_object(), aes_attributes(), ONLY_SYMMETRIC),
        (aes_object(), Attributes(cryptographic_length=256), NO_ALGORITHM),
        (aes_object(), rsa_attributes(2048), ONLY_AES),
        (
            aes_object(),
            Attributes(
                cryptographic_algorithm=CryptographicAlgorithm.ChaCha20, cryptographic_length=256
            ),
            ONLY_AES,
        ),
        (aes_object(), aes_attributes(None), NO_LENGTH),
        (aes_object(), aes_attributes(192), BAD_AES_LENGTH.format(192)),
        (aes_object(), aes_attributes(512), BAD_AES_LENGTH.format(512)),
        (aes_object(), None, "Invalid Request: attributes must be Attributes"),
    ],
)
async def test_create_bad_request(env: Env, object_: Any, attributes: Any, message: str) -> None:
    uid = env.fresh_uid()
    before = env.objects()
    with pytest.raises(InvalidRequestError) as info:
        await env.store.create(uid, ADMIN, object_, attributes, {"t"})
    assert str(info.value) == message
    assert OBJECT_KEY.hex() not in str(info.value) and repr(OBJECT_KEY) not in str(info.value)
    assert env.objects() == before and await no_key(env, uid)


@pytest.mark.parametrize(
    ("uid", "message"),
    [
        (None, NEEDS_UID),
        ("other::0::k", FORM.format(uid="other::0::k")),
        ("hsm::0::", FORM.format(uid="hsm::0::")),
        ("hsm::x::k", SLOT.format(reason="invalid digit found in string")),
        ("hsm::::k", SLOT.format(reason="cannot parse integer from empty string")),
        ("hsm::999::k", "Invalid Request: slot 999 is not accessible"),
    ],
)
async def test_create_bad_uid(env: Env, uid: str | None, message: str) -> None:
    before = env.objects()
    with pytest.raises(InvalidRequestError) as info:
        await env.store.create(uid, ADMIN, aes_object(), aes_attributes(), [])
    assert str(info.value) == message
    assert env.objects() == before


async def test_create_existing_id(env: Env) -> None:
    uid = await env.aes()
    before = env.objects()
    with pytest.raises(HsmError) as info:
        await env.store.create(uid, ADMIN, aes_object(), aes_attributes(128), [])
    assert str(info.value) == "HSM Error: A secret key with this id already exists"
    assert env.objects() == before


async def test_create_ignores_tags_and_the_objects_key(env: Env) -> None:
    uid = env.fresh_uid()
    await env.store.create(uid, ADMIN, aes_object(), aes_attributes(), {"t1", "t2"})
    assert await env.store.retrieve_tags(uid) == set()
    assert await env.store.list_uids_for_tags({"t1"}) == set()
    found = await env.store.retrieve(uid)
    assert found is not None
    material = found.object.key_block().key_material()
    assert isinstance(material, TransparentSymmetricKey)
    assert len(material.key) == 32 and material.key != OBJECT_KEY  # generated on the token


# --------------------------------------------------------------------------------------------
# atomic: RSA key pairs, UpdateObject no-ops, nothing else
# --------------------------------------------------------------------------------------------


async def test_atomic_rsa_key_pair_default_length(env: Env) -> None:
    sk, pk = await env.rsa(None)
    for uid, key_type in ((sk, KeyType.RSA_PRIVATE_KEY), (pk, KeyType.RSA_PUBLIC_KEY)):
        metadata = await env.store.get_key_metadata(uid)
        assert metadata is not None
        assert (metadata.key_type, metadata.key_length_in_bits) == (key_type, 2048)
        assert metadata.sensitive is False


@pytest.mark.parametrize("public", ["none", "uid None", "uid _pk"])
async def test_atomic_rsa_key_pair_shapes(env: Env, public: str) -> None:
    uid = env.fresh_uid()
    operations: list[AtomicOperation] = [
        Create(uid, rsa_private_object(), rsa_attributes(1024, sensitive=True), {"tag"})
    ]
    if public != "none":
        pk_uid = None if public == "uid None" else uid + "_pk"
        operations.append(Create(pk_uid, rsa_public_object(), rsa_attributes(1024), set()))
    assert await env.store.atomic(ADMIN, operations) == [uid, uid + "_pk"]
    private = await env.store.get_key_metadata(uid)
    assert private is not None and private.sensitive is True
    assert private.key_length_in_bits == 1024
    assert await env.store.get_key_type(uid + "_pk") is KeyType.RSA_PUBLIC_KEY


async def test_atomic_key_pair_by_wildcard_admin(env: Env) -> None:
    uid = env.fresh_uid()
    operations = [Create(uid, rsa_private_object(), rsa_attributes(), set())]
    assert await store_with(env, ["*"]).atomic(USER, operations) == [uid, uid + "_pk"]


async def test_atomic_key_pair_non_admin(env: Env) -> None:
    uid = env.fresh_uid()
    before = env.objects()
    with pytest.raises(UnauthorizedError) as info:
        await env.store.atomic(USER, [Create(uid, rsa_private_object(), rsa_attributes(), set())])
    assert str(info.value) == "Unauthorized: Only the HSM Admin can create HSM keypairs"
    assert env.objects() == before and await no_key(env, uid)


def refused_batches(uid: str) -> list[list[AtomicOperation]]:
    sk = Create(uid, rsa_private_object(), rsa_attributes(), set())
    pk = Create(uid + "_pk", rsa_public_object(), rsa_attributes(), set())
    update = UpdateObject(uid, aes_object(), aes_attributes())
    return [
        [Create(uid, aes_object(), aes_attributes(), set())],
        [Create(uid, rsa_private_object(), Attributes(cryptographic_length=1024), set())],
        [
            Create(
                uid,
                rsa_private_object(),
                Attributes(cryptographic_algorithm=CryptographicAlgorithm.EC),
                set(),
            )
        ],
        [Create(uid, rsa_public_object(), rsa_attributes(), set())],
        [UpdateState(uid, State.Active)],
        [Delete(uid)],
        [Upsert(uid, rsa_private_object(), rsa_attributes(), None, State.Active)],
        [pk, sk],
        [sk, pk, pk],
        [sk, Delete(uid + "-other")],
        [sk, Create(uid + "-2", rsa_private_object(), rsa_attributes(), set())],
        [update, Delete(uid)],
        [sk, update],
    ]


@pytest.mark.parametrize("index", range(len(refused_batches("x"))))
async def test_atomic_refused_batches(env: Env, index: int) -> None:
    uid = env.fresh_uid()
    before = env.objects()
    with pytest.raises(InvalidRequestError) as info:
        await env.store.atomic(ADMIN, refused_batches(uid)[index])
    assert str(info.value) == ATOMIC
    assert env.objects() == before and await no_key(env, uid)


@pytest.mark.parametrize(
    ("make_uid", "bits", "message"),
    [
        (lambda uid: uid + "_other", 1024, "must have the uid"),
        (lambda uid: "hsm::0::elsewhere", 1024, "must have the uid"),
        (lambda uid: uid + "_pk", 1000, "Invalid key length: 1000 bits, for and HSM RSA key"),
    ],
)
async def test_atomic_key_pair_bad_request(
    env: Env, make_uid: Callable[[str], str], bits: int, message: str
) -> None:
    uid = env.fresh_uid()
    pk_uid = make_uid(uid)
    operations: list[AtomicOperation] = [
        Create(uid, rsa_private_object(), rsa_attributes(bits), set()),
        Create(pk_uid, rsa_public_object(), rsa_attributes(bits), set()),
    ]
    before = env.objects()
    with pytest.raises(InvalidRequestError) as info:
        await env.store.atomic(ADMIN, operations)
    if message == "must have the uid":
        message = (
            f"The public key of the HSM key pair {uid} must have the uid {uid}_pk, got: {pk_uid}"
        )
    assert str(info.value) == "Invalid Request: " + message
    assert env.objects() == before and await no_key(env, uid)


@pytest.mark.parametrize(
    ("uid", "message"),
    [
        (None, NEEDS_UID),
        ("hsm::x::k", SLOT.format(reason="invalid digit found in string")),
        ("hsm::0", FORM.format(uid="hsm::0")),
    ],
)
async def test_atomic_key_pair_bad_uid(env: Env, uid: str | None, message: str) -> None:
    before = env.objects()
    with pytest.raises(InvalidRequestError) as info:
        await env.store.atomic(ADMIN, [Create(uid, rsa_private_object(), rsa_attributes(), set())])
    assert str(info.value) == message
    assert env.objects() == before


async def test_atomic_update_objects_are_accepted_no_ops(env: Env) -> None:
    uid = await env.aes()
    before = await env.store.retrieve(uid)
    renamed = aes_attributes(128, name=[Name(name_value="renamed")], comment="new")
    operations: list[AtomicOperation] = [
        UpdateObject(uid, aes_object(), renamed, {"t"}),
        UpdateObject(uid, aes_object(), renamed, None),
    ]
    assert await env.store.atomic(ADMIN, operations) == []
    assert await env.store.atomic(USER, []) == []
    assert await env.store.retrieve(uid) == before
    with pytest.raises(InvalidRequestError) as info:
        await env.store.atomic(ADMIN, [UpdateObject("hsm::0", aes_object(), renamed)])
    assert str(info.value) == FORM.format(uid="hsm::0")


# --------------------------------------------------------------------------------------------
# retrieve: the KMIP objects
# --------------------------------------------------------------------------------------------


async def test_retrieve_aes_key(env: Env) -> None:
    uid = await env.aes(128)
    found = await env.store.retrieve(uid)
    assert found is not None
    assert (found.id, found.owner, found.state) == (uid, ADMIN, State.Active)
    expected = expected_attributes(KeyType.AES_KEY, 128)
    assert found.attributes == expected
    key = found.object
    assert isinstance(key, SymmetricKey) and key.object_type() == ObjectType.SymmetricKey
    block = key.key_block()
    assert block.key_format_type == KeyFormatType.TransparentSymmetricKey
    assert block.cryptographic_algorithm == CryptographicAlgorithm.AES
    assert block.cryptographic_length == 128 and not key.is_wrapped()
    assert key.attributes() == expected and key.attributes() is not found.attributes
    material = block.key_material()
    assert isinstance(material, TransparentSymmetricKey) and len(material.key) == 16
    # the exported bytes are the token's key: they open what the token sealed
    sealed = await env.store.encrypt(uid, b"payload", None, b"aad")
    assert sealed.iv is not None and sealed.tag is not None
    assert AESGCM(bytes(material.key)).decrypt(sealed.iv, sealed.ciphertext + sealed.tag, b"aad")
    assert object_from_msgpack(object_to_msgpack(key)) == key


async def test_retrieve_rsa_key_pair(env: Env) -> None:
    sk, pk = await env.rsa(1024)
    private = await env.store.retrieve(sk)
    public = await env.store.retrieve(pk)
    assert private is not None and public is not None
    assert (private.id, private.owner, private.state) == (sk, ADMIN, State.Active)
    assert (public.id, public.owner, public.state) == (pk, ADMIN, State.Active)
    assert private.attributes == expected_attributes(KeyType.RSA_PRIVATE_KEY, 1024)
    assert public.attributes == expected_attributes(KeyType.RSA_PUBLIC_KEY, 1024)
    assert isinstance(private.object, PrivateKey) and isinstance(public.object, PublicKey)
    assert private.object.attributes() == private.attributes
    assert public.object.attributes() == public.attributes
    sk_block, pk_block = private.object.key_block(), public.object.key_block()
    assert sk_block.key_format_type == KeyFormatType.TransparentRSAPrivateKey
    assert pk_block.key_format_type == KeyFormatType.TransparentRSAPublicKey
    for block in (sk_block, pk_block):
        assert block.cryptographic_algorithm == CryptographicAlgorithm.RSA
        assert block.cryptographic_length == 1024
    s, p = sk_block.key_material(), pk_block.key_material()
    assert isinstance(s, TransparentRSAPrivateKey) and isinstance(p, TransparentRSAPublicKey)
    assert s.modulus == p.modulus and s.public_exponent == p.public_exponent == b"\x01\x00\x01"
    assert s.p is not None and s.q is not None and s.private_exponent is not None
    assert s.prime_exponent_p is not None and s.prime_exponent_q is not None
    assert s.crt_coefficient is not None
    numbers = rsa.RSAPrivateNumbers(
        p=int.from_bytes(bytes(s.p)),
        q=int.from_bytes(bytes(s.q)),
        d=int.from_bytes(bytes(s.private_exponent)),
        dmp1=int.from_bytes(bytes(s.prime_exponent_p)),
        dmq1=int.from_bytes(bytes(s.prime_exponent_q)),
        iqmp=int.from_bytes(bytes(s.crt_coefficient)),
        public_numbers=rsa.RSAPublicNumbers(
            int.from_bytes(p.public_exponent), int.from_bytes(p.modulus)
        ),
    )
    # the exported private key opens what the token sealed with the public key
    sealed = await env.store.encrypt(pk, b"secret", CryptoAlgorithm.RSA_OAEP_SHA1)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    assert numbers.private_key().decrypt(sealed.ciphertext, oaep) == b"secret"


@pytest.mark.parametrize(
    ("admins", "owner"),
    [
        ([ADMIN], ADMIN),
        (["*", "carol", ADMIN], "carol"),
        (["carol", "*"], "carol"),
        (["*"], "admin"),
        ([], "admin"),
    ],
)
async def test_owner_is_the_first_named_admin(env: Env, admins: list[str], owner: str) -> None:
    uid = await env.aes()
    store = store_with(env, admins)
    assert store.owner == owner
    found = await store.retrieve(uid)
    assert found is not None and found.owner == owner


async def test_retrieve_tags_under_the_vendor_id(env: Env) -> None:
    uid = await env.aes()
    found = await store_with(env, [ADMIN], "acme").retrieve(uid)
    assert found is not None
    assert found.attributes.get_tags("acme") == {"_kk"}
    assert found.attributes.get_tags("cosmian") == set()


async def test_retrieve_sensitive_aes_key_is_a_stub(env: Env) -> None:
    uid = await env.aes(256, sensitive=True)
    found = await env.store.retrieve(uid)
    assert found is not None
    assert (found.id, found.owner, found.state) == (uid, ADMIN, State.Active)
    assert found.attributes == expected_attributes(KeyType.AES_KEY, 256, sensitive=True)
    key = found.object
    assert isinstance(key, SymmetricKey)
    block = key.key_block()
    assert (block.cryptographic_algorithm, block.cryptographic_length) == (
        CryptographicAlgorithm.AES,
        256,
    )
    material = block.key_material()
    assert isinstance(material, TransparentSymmetricKey) and len(material.key) == 0
    assert object_from_msgpack(object_to_msgpack(key)) == key
    assert object_from_json(object_to_json(key)) == key


async def test_retrieve_sensitive_rsa_private_key_is_a_stub(env: Env) -> None:
    sk, pk = await env.rsa(1024, sensitive=True)
    private = await env.store.retrieve(sk)
    assert private is not None and private.state == State.Active
    assert private.attributes == expected_attributes(KeyType.RSA_PRIVATE_KEY, 1024, sensitive=True)
    assert isinstance(private.object, PrivateKey)
    block = private.object.key_block()
    assert block.key_format_type == KeyFormatType.TransparentRSAPrivateKey
    assert block.cryptographic_length == 1024
    assert block.key_material() == TransparentRSAPrivateKey(modulus=b"")
    assert object_from_msgpack(object_to_msgpack(private.object)) == private.object
    public = await env.store.retrieve(pk)  # the public half is never sensitive
    assert public is not None and isinstance(public.object, PublicKey)
    material = public.object.key_block().key_material()
    assert isinstance(material, TransparentRSAPublicKey) and len(material.modulus) == 128


async def test_retrieve_missing_key(env: Env) -> None:
    assert await env.store.retrieve(env.uid(unique("missing"))) is None


@pytest.fixture
def hmac_key(session: Session) -> Iterator[str]:
    """A token HMAC key (a key type the HSM contract leaves out); destroyed afterwards."""
    raw = unique("hmac").encode()
    handle = session.create_object(
        [
            (ck.CKA_CLASS, ck.CKO_SECRET_KEY),
            (ck.CKA_KEY_TYPE, ck.CKK_GENERIC_SECRET),
            (ck.CKA_VALUE, bytes(range(64))),
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
        yield raw.decode()
    finally:
        session.destroy_object(handle)


async def test_keys_of_other_types_are_not_objects(env: Env, hmac_key: str) -> None:
    uid = env.uid(hmac_key)
    assert await env.store.retrieve(uid) is None
    assert await env.store.find(Attributes(unique_identifier=uid), None, ADMIN, True) == []
    # the oracle half still reaches it (HMAC through MacCapable HSMs)
    mac = await env.store.mac(uid, b"data")
    assert mac == hmac.new(bytes(range(64)), b"data", hashlib.sha256).digest()
    assert await env.store.mac_verify(uid, b"data", mac) is True


async def test_retrieve_carries_the_rotation_lineage_of_the_label(env: Env) -> None:
    uid = await env.aes()
    lineage = unique("lineage")
    _, key_id = env.store.parse_uid(uid)
    await env.hsm.set_key_label(env.slot, key_id, f"{lineage}::4::{key_id}")
    found = await env.store.retrieve(uid)
    assert found is not None
    assert (found.attributes.rotate_name, found.attributes.rotate_generation) == (lineage, 4)
    [(_, _, attributes)] = await env.store.find(
        Attributes(unique_identifier=uid), None, ADMIN, True
    )
    assert attributes == found.attributes
    assert await env.store.find_by_rotate_name(lineage) == [uid]
    assert await env.store.find_by_rotate_name(unique("other")) == []


# --------------------------------------------------------------------------------------------
# updates, tags, delete, ownership
# --------------------------------------------------------------------------------------------


async def test_update_object_is_an_accepted_no_op(env: Env) -> None:
    uid = await env.aes()
    before = await env.store.retrieve(uid)
    objects = env.objects()
    changed = aes_attributes(128, name=[Name(name_value="renamed")], description="changed")
    await env.store.update_object(uid, aes_object(), changed, {"t"})
    await env.store.update_object(uid, aes_object(), changed)
    assert await env.store.retrieve(uid) == before and env.objects() == objects


@pytest.mark.parametrize("state", list(State))
async def test_update_state_is_refused(env: Env, state: State) -> None:
    uid = await env.aes()
    with pytest.raises(InvalidRequestError) as info:
        await env.store.update_state(uid, state)
    assert str(info.value) == "Invalid Request: Update state is not supported for HSMs"
    found = await env.store.retrieve(uid)
    assert found is not None and found.state == State.Active


async def test_no_tags(env: Env) -> None:
    uid = await env.aes()
    assert await env.store.retrieve_tags(uid) == set()
    assert await env.store.retrieve_tags(env.uid(unique("missing"))) == set()
    for tags in ({"_kk"}, {"t1", "t2"}, set()):
        assert await env.store.list_uids_for_tags(tags) == set()
    with pytest.raises(InvalidRequestError):
        await env.store.list_uids_for_tags("_kk")


async def test_delete_destroys_the_key(env: Env) -> None:
    uid = await env.aes()
    sk, pk = await env.rsa()
    before = env.objects()
    for key in (uid, sk, pk):
        await env.store.delete(key)
        assert await env.store.retrieve(key) is None and await no_key(env, key)
    assert env.objects() == before - 3
    await env.store.delete(uid)  # an unknown uid is not an error
    with pytest.raises(InvalidRequestError) as info:
        await env.store.delete("hsm::999::k")
    assert str(info.value) == "Invalid Request: slot 999 is not accessible"


async def test_is_object_owned_by_means_is_admin(env: Env) -> None:
    uid = await env.aes()
    missing = env.uid(unique("missing"))
    for key in (uid, missing):
        assert await env.store.is_object_owned_by(key, ADMIN) is True
        assert await env.store.is_object_owned_by(key, USER) is False
        assert await store_with(env, ["*"]).is_object_owned_by(key, USER) is True


UID_CALLS: dict[str, Callable[[HsmStore, str], Any]] = {
    "retrieve": lambda store, uid: store.retrieve(uid),
    "retrieve_tags": lambda store, uid: store.retrieve_tags(uid),
    "update_object": lambda store, uid: store.update_object(uid, aes_object(), aes_attributes()),
    "delete": lambda store, uid: store.delete(uid),
    "is_object_owned_by": lambda store, uid: store.is_object_owned_by(uid, ADMIN),
    "get_key_type": lambda store, uid: store.get_key_type(uid),
    "encrypt": lambda store, uid: store.encrypt(uid, b"data"),
}


@pytest.mark.parametrize("method", list(UID_CALLS))
@pytest.mark.parametrize(
    ("uid", "message"),
    [
        ("other::0::k", FORM.format(uid="other::0::k")),
        ("hsm::0", FORM.format(uid="hsm::0")),
        ("0::k", FORM.format(uid="0::k")),
        ("hsm::x::k", SLOT.format(reason="invalid digit found in string")),
        ("hsm::-1::k", SLOT.format(reason="invalid digit found in string")),
        ("hsm::::k", SLOT.format(reason="cannot parse integer from empty string")),
        (
            "hsm::18446744073709551616::k",
            SLOT.format(reason="number too large to fit in target type"),
        ),
    ],
)
async def test_uid_errors(env: Env, method: str, uid: str, message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await UID_CALLS[method](env.store, uid)
    assert str(info.value) == message


# --------------------------------------------------------------------------------------------
# find
# --------------------------------------------------------------------------------------------


@dataclass
class Keys:
    aes256: str
    aes128: str
    sk: str
    pk: str

    def all(self) -> set[str]:
        return {self.aes256, self.aes128, self.sk, self.pk}


@pytest.fixture
async def keys(env: Env) -> Keys:
    sk, pk = await env.rsa(1024)
    return Keys(await env.aes(256), await env.aes(128), sk, pk)


async def find_uids(
    store: HsmStore,
    search: Attributes | None,
    *,
    state: State | None = None,
    user: str = ADMIN,
    must_own: bool = True,
) -> list[str]:
    return [uid for uid, _, _ in await store.find(search, state, user, must_own)]


A = CryptographicAlgorithm
T = ObjectType
F = KeyFormatType
TYPE_SEARCHES: list[tuple[Attributes, HsmObjectFilter | None, set[str]]] = [
    (Attributes(), HsmObjectFilter.ANY, {"aes256", "aes128", "sk", "pk"}),
    (Attributes(cryptographic_algorithm=A.AES), HsmObjectFilter.AES_KEY, {"aes256", "aes128"}),
    (Attributes(cryptographic_algorithm=A.RSA), HsmObjectFilter.RSA_KEY, {"sk", "pk"}),
    (Attributes(object_type=T.SymmetricKey), HsmObjectFilter.AES_KEY, {"aes256", "aes128"}),
    (Attributes(object_type=T.PrivateKey), HsmObjectFilter.RSA_PRIVATE_KEY, {"sk"}),
    (Attributes(object_type=T.PublicKey), HsmObjectFilter.RSA_PUBLIC_KEY, {"pk"}),
    (
        Attributes(cryptographic_algorithm=A.RSA, object_type=T.PrivateKey),
        HsmObjectFilter.RSA_PRIVATE_KEY,
        {"sk"},
    ),
    (
        Attributes(cryptographic_algorithm=A.AES, object_type=T.SymmetricKey),
        HsmObjectFilter.AES_KEY,
        {"aes256", "aes128"},
    ),
    (
        Attributes(key_format_type=F.TransparentSymmetricKey),
        HsmObjectFilter.AES_KEY,
        {"aes256", "aes128"},
    ),
    (
        Attributes(key_format_type=F.TransparentRSAPublicKey, cryptographic_algorithm=A.RSA),
        HsmObjectFilter.RSA_PUBLIC_KEY,
        {"pk"},
    ),
    (Attributes(cryptographic_algorithm=A.AES, object_type=T.PrivateKey), None, set()),
    (Attributes(cryptographic_algorithm=A.RSA, object_type=T.SymmetricKey), None, set()),
    (Attributes(cryptographic_algorithm=A.AES, key_format_type=F.Raw), None, set()),
    (Attributes(key_format_type=F.CoverCryptSecretKey), None, set()),
    (Attributes(cryptographic_algorithm=A.DES), None, set()),
    (Attributes(cryptographic_algorithm=A.CoverCrypt), None, set()),
    (Attributes(object_type=T.Certificate), None, set()),
    (Attributes(object_type=T.SecretData), None, set()),
]


@pytest.mark.parametrize(("search", "hsm_filter", "expected"), TYPE_SEARCHES)
async def test_find_by_algorithm_object_type_and_format(
    env: Env,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    search: Attributes,
    hsm_filter: HsmObjectFilter | None,
    expected: set[str],
) -> None:
    filters: list[HsmObjectFilter] = []
    find = env.hsm.find

    async def recording_find(slot_id: int, object_filter: HsmObjectFilter) -> list[bytes]:
        filters.append(object_filter)
        return await find(slot_id, object_filter)

    monkeypatch.setattr(env.hsm, "find", recording_find)
    found = await env.store.find(search, None, ADMIN, True)
    wanted = {getattr(keys, name) for name in expected}
    assert {uid for uid, _, _ in found} & keys.all() == wanted
    assert filters == ([] if hsm_filter is None else [hsm_filter])
    for uid, state, attributes in found:  # every result matches, keys of other tests too
        assert state == State.Active and uid.startswith(f"hsm::{env.slot}::")
        for name in ("cryptographic_algorithm", "object_type", "key_format_type"):
            assert getattr(search, name) in (None, getattr(attributes, name))


async def test_find_gives_the_attributes_of_retrieve(env: Env, keys: Keys) -> None:
    found = await env.store.find(None, None, ADMIN, True)
    uids = [uid for uid, _, _ in found]
    assert len(uids) == len(set(uids)) and keys.all() <= set(uids)
    for uid, state, attributes in found:
        if uid in keys.all():
            retrieved = await env.store.retrieve(uid)
            assert retrieved is not None
            assert (state, attributes) == (retrieved.state, retrieved.attributes)


async def test_find_lists_each_uid_once(env: Env, session: Session) -> None:
    uid = await env.aes()
    _, key_id = env.store.parse_uid(uid)
    public = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
    handle = session.create_object(  # an RSA public key provisioned under the AES key's id
        [
            (ck.CKA_CLASS, ck.CKO_PUBLIC_KEY),
            (ck.CKA_KEY_TYPE, ck.CKK_RSA),
            (ck.CKA_TOKEN, True),
            (ck.CKA_VERIFY, True),
            (ck.CKA_MODULUS, public.n.to_bytes(128)),
            (ck.CKA_PUBLIC_EXPONENT, public.e.to_bytes(3)),
            (ck.CKA_ID, key_id.encode()),
        ]
    )
    try:
        found = await env.store.find(Attributes(unique_identifier=uid), None, ADMIN, True)
        assert found == [(uid, State.Active, expected_attributes(KeyType.AES_KEY, 256))]
        # the uid names the AES key (as retrieve says), so it is no public key
        search = Attributes(unique_identifier=uid, object_type=T.PublicKey)
        assert await find_uids(env.store, search) == []
    finally:
        session.destroy_object(handle)


@pytest.mark.parametrize(("length", "expected"), [(128, {"aes128"}), (256, {"aes256"})])
async def test_find_by_length(env: Env, keys: Keys, length: int, expected: set[str]) -> None:
    search = Attributes(cryptographic_algorithm=A.AES, cryptographic_length=length)
    found = await env.store.find(search, None, ADMIN, True)
    assert {uid for uid, _, _ in found} & keys.all() == {getattr(keys, n) for n in expected}
    assert all(attributes.cryptographic_length == length for _, _, attributes in found)
    search = Attributes(cryptographic_algorithm=A.RSA, cryptographic_length=1024)
    assert set(await find_uids(env.store, search)) & keys.all() == {keys.sk, keys.pk}


async def test_find_by_unique_identifier(env: Env, keys: Keys) -> None:
    for uid in keys.all():
        assert await find_uids(env.store, Attributes(unique_identifier=uid)) == [uid]
    search = Attributes(unique_identifier=keys.sk, object_type=T.PublicKey)
    assert await find_uids(env.store, search) == []
    _, key_id = env.store.parse_uid(keys.aes128)
    for other in (
        f"other::{env.slot}::{key_id}",  # another store's uid
        f"hsm::+{env.slot}::{key_id}",  # not the uid itself
        "hsm::x::k",  # malformed: finds nothing rather than failing
        f"hsm::999::{key_id}",  # a slot not configured
        env.uid(unique("missing")),
        key_id,
    ):
        assert await find_uids(env.store, Attributes(unique_identifier=other)) == []


UNSUPPORTED: dict[str, Attributes] = {
    "name": Attributes(name=[Name(name_value="the-kek")]),
    "link": Attributes(link=[Link(link_type=LinkType.ParentLink, linked_object_identifier="x")]),
    "object group": Attributes(object_group="g"),
    "object group member": Attributes(object_group_member="GroupMemberDefault"),
    "usage mask": Attributes(cryptographic_usage_mask=AES_MASK),
    "description": Attributes(description="d"),
    "comment": Attributes(comment="c"),
    "contact information": Attributes(contact_information="c"),
    "x509 identifier": Attributes(x509_certificate_identifier=b"i"),
    "x509 issuer": Attributes(x509_certificate_issuer=b"i"),
    "x509 subject": Attributes(x509_certificate_subject=b"s"),
    "application specific": Attributes(
        application_specific_information=ApplicationSpecificInformation(application_namespace="ns")
    ),
}


@pytest.mark.parametrize("attribute", list(UNSUPPORTED))
async def test_find_nothing_by_attributes_hsm_keys_lack(env: Env, attribute: str) -> None:
    uid = await env.aes()
    assert await find_uids(env.store, Attributes(unique_identifier=uid)) == [uid]
    search = msgspec.structs.replace(UNSUPPORTED[attribute], unique_identifier=uid)
    assert await find_uids(env.store, search) == []


@pytest.mark.parametrize("tags", [{"t"}, {"_kk"}])
async def test_find_nothing_by_tags(env: Env, tags: set[str]) -> None:
    uid = await env.aes()
    search = Attributes(unique_identifier=uid)
    search.set_tags("acme", tags)
    assert await find_uids(env.store, search) == [uid]  # not the searched vendor's tags
    assert await env.store.find(search, None, ADMIN, True, "acme") == []
    search.set_tags("cosmian", tags)
    assert await find_uids(env.store, search) == []


async def test_find_empty_lists_filter_nothing(env: Env) -> None:
    uid = await env.aes()
    search = Attributes(unique_identifier=uid, name=[], link=[])
    search.set_tags("cosmian", set())
    assert await find_uids(env.store, search) == [uid]


@pytest.mark.parametrize("state", [None, *State])
async def test_find_by_state(env: Env, state: State | None) -> None:
    uid = await env.aes()
    search = Attributes(unique_identifier=uid)
    expected = [uid] if state in (None, State.Active) else []
    assert await find_uids(env.store, search, state=state) == expected


@pytest.mark.parametrize(
    ("admins", "user", "must_own", "found"),
    [
        ([ADMIN], ADMIN, True, True),
        ([ADMIN], USER, True, False),
        ([ADMIN], USER, False, True),
        (["*"], USER, True, True),
        ([], ADMIN, True, False),
        ([], ADMIN, False, True),
    ],
)
async def test_find_by_owner(
    env: Env, admins: list[str], user: str, must_own: bool, found: bool
) -> None:
    uid = await env.aes()
    search = Attributes(unique_identifier=uid)
    result = await find_uids(store_with(env, admins), search, user=user, must_own=must_own)
    assert result == ([uid] if found else [])


async def test_find_bad_input(env: Env) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await env.store.find({"ObjectType": "SymmetricKey"}, None, ADMIN, True)  # type: ignore[arg-type]
    assert str(info.value) == "Invalid Request: researched_attributes must be Attributes or None"
    with pytest.raises(InvalidRequestError) as info:
        await env.store.find(None, 2, ADMIN, True)  # type: ignore[arg-type]
    assert str(info.value) == "Invalid Request: expected a State, got int"


async def test_find_skips_ids_that_are_not_utf8(env: Env) -> None:
    raw = b"\xff\xfe" + uuid.uuid4().bytes
    before = await env.store.count_non_destroyed_keys()
    await env.hsm.create_key(env.slot, raw, HsmKeyAlgorithm.AES, 256, False)
    try:
        found = await env.store.find(Attributes(cryptographic_length=256), None, ADMIN, True)
        uids = [uid for uid, _, _ in found]
        assert env.uid(raw.decode("utf-8", "surrogateescape")) not in uids
        assert all(uid.encode() for uid in uids)  # every uid is valid text
        assert await env.store.count_non_destroyed_keys() == before + 1  # it is still a key
    finally:
        await env.hsm.delete(env.slot, raw)


async def test_find_searches_every_configured_slot(
    env: Env, token: SoftHsmToken, spare_token: SoftHsmToken, module: Module
) -> None:
    spare = module.find_slot(spare_token.label)
    passwords = {env.slot: token.user_pin, spare: spare_token.user_pin}
    async with Pkcs11Hsm(token.module, passwords, pool_size=2) as hsm:
        store = HsmStore(hsm, [ADMIN], "cosmian", "hsm")
        key_id = unique("both")
        uids = [f"hsm::{slot}::{key_id}" for slot in (env.slot, spare)]
        try:
            for uid in uids:
                await store.create(uid, ADMIN, aes_object(), aes_attributes(), [])
            found = await store.find(Attributes(cryptographic_algorithm=A.AES), None, ADMIN, True)
            assert sorted(uid for uid, _, _ in found if uid in uids) == sorted(uids)
            assert await find_uids(store, Attributes(unique_identifier=uids[1])) == [uids[1]]
            assert (
                await env.store.find(Attributes(unique_identifier=uids[1]), None, ADMIN, True) == []
            )
        finally:
            for uid in uids:
                await store.delete(uid)


# --------------------------------------------------------------------------------------------
# the other ObjectsStore methods
# --------------------------------------------------------------------------------------------


async def test_counts_are_the_keys_of_the_configured_slots(env: Env) -> None:
    before = await env.store.count_non_destroyed_keys()
    assert await env.store.count_all_non_destroyed() == before
    uid = await env.aes()
    await env.rsa()
    assert await env.store.count_non_destroyed_keys() == before + 3
    assert await env.store.count_all_non_destroyed() == before + 3
    await env.store.delete(uid)
    assert await env.store.count_all_non_destroyed() == before + 2


async def test_nothing_is_wrapped_or_due_for_rotation(env: Env) -> None:
    uid = await env.aes()
    assert await env.store.find_wrapped_by(uid, ADMIN) == []
    assert await env.store.find_due_for_rotation(object()) == []


# --------------------------------------------------------------------------------------------
# The oracle half: HsmEncryptionOracle's rules through the store
# --------------------------------------------------------------------------------------------


async def test_oracle_aes(env: Env) -> None:
    uid = await env.aes()
    sealed = await env.store.encrypt(uid, b"data")
    assert sealed.iv is not None and sealed.tag is not None
    assert (len(sealed.iv), len(sealed.tag), len(sealed.ciphertext)) == (12, 16, 4)
    blob = sealed.iv + sealed.ciphertext + sealed.tag
    assert await env.store.decrypt(uid, blob) == b"data"
    # byte-compatible with HsmEncryptionOracle over the same HSM, both ways
    oracle = HsmEncryptionOracle(env.hsm, "hsm")
    assert await oracle.decrypt(uid, blob) == b"data"
    cbc = await oracle.encrypt(uid, b"x" * 20, CryptoAlgorithm.AES_CBC)
    assert cbc.iv is not None and cbc.tag is None
    assert await env.store.decrypt(uid, cbc.iv + cbc.ciphertext, CryptoAlgorithm.AES_CBC) == (
        b"x" * 20
    )
    with_aad = await env.store.encrypt(uid, b"data", None, b"header")
    assert with_aad.iv is not None and with_aad.tag is not None
    joined = with_aad.iv + with_aad.ciphertext + with_aad.tag
    assert await env.store.decrypt(uid, joined, None, b"header") == b"data"
    assert await env.store.get_key_type(uid) is KeyType.AES_KEY


async def test_oracle_rsa_redirects_and_refusals(env: Env) -> None:
    sk, pk = await env.rsa()
    sealed = await env.store.encrypt(sk, b"secret")  # the private uid encrypts with <uid>_pk
    assert await env.store.decrypt(sk, sealed.ciphertext) == b"secret"
    with pytest.raises(InvalidRequestError) as info:
        await env.store.decrypt(pk, sealed.ciphertext)
    assert str(info.value) == "Invalid Request: An RSA public key cannot be used to decrypt"
    signature = await env.store.sign(sk, b"message")
    assert await env.store.signature_verify(pk, b"message", signature) is True
    assert await env.store.signature_verify(sk, b"tampered", signature) is False
    sha1 = CryptographicParameters(hashing_algorithm=HashingAlgorithm.SHA1)
    assert await env.store.signature_verify(sk, b"message", signature, sha1) is False
    signature = await env.store.sign(sk, b"message", sha1)
    assert await env.store.signature_verify(pk, b"message", signature, sha1) is True
    assert await env.store.signature_verify(pk, b"message", signature) is False
    await env.store.delete(pk)
    with pytest.raises(InvalidRequestError) as info:
        await env.store.encrypt(sk, b"secret")
    assert str(info.value) == (
        f"Invalid Request: The key {sk} is a private key, but no public key {sk}_pk is available"
    )


async def test_oracle_unknown_key(env: Env) -> None:
    uid = env.uid(unique("missing"))
    assert await env.store.get_key_type(uid) is None
    assert await env.store.get_key_metadata(uid) is None
    with pytest.raises(InvalidRequestError) as info:
        await env.store.encrypt(uid, b"data")
    assert str(info.value) == f"Invalid Request: The key type of key: {uid}, cannot be determined"
    with pytest.raises(InvalidRequestError):
        await env.store.decrypt(uid, bytes(28))


async def test_oracle_mac_with_an_aes_key_is_not_supported(env: Env) -> None:
    uid = await env.aes()
    with pytest.raises(NotSupportedError):
        await env.store.mac(uid, b"data")
    with pytest.raises(NotSupportedError):
        await env.store.mac_verify(uid, b"data", bytes(32))
