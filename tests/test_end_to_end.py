"""The router built from TOML: an HSM (SoftHSM2) and an LMDB default store side by side.

One scenario, as a KMS server would run it: HSM keys created by an admin (and refused to anyone
else), 100 database keys wrapped by a sensitive HSM key-encryption key, found by the KEK, unwrapped
and used with ``cryptography``, then a clear error once the KEK is destroyed. Protection at rest
is configured the same way.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms_iface import (
    Create,
    Database,
    InvalidRequestError,
    KeyType,
    Pkcs11Hsm,
    UnauthorizedError,
)
from kms_iface.config import load_config
from kms_iface.hsm_store import HsmStore
from kms_iface.kmip import (
    Attributes,
    CryptographicAlgorithm,
    KeyBlock,
    KeyFormatType,
    KmipOperation,
    PlainKeyValue,
    PrivateKey,
    PublicKey,
    SymmetricKey,
    TransparentSymmetricKey,
    symmetric_key_object,
)
from kms_iface.pkcs11.softhsm import SoftHsmToken

ADMIN = "admin@example.org"
ALICE = "alice@example.org"
MALLORY = "mallory@example.org"
PIN_VARIABLE = "KMS_IFACE_E2E_PIN"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def write_config(
    tmp_path: Path, token: SoftHsmToken, slot: int, extra: str = "", cache: int = 0
) -> Path:
    path = tmp_path / "kms.toml"
    path.write_text(
        f"""
vendor_id = "cosmian"
unwrap_cache_size = {cache}
{extra}

[default_store]
kind = "lmdb"
path = "{tmp_path / "store"}"

[[hsm_instances]]
model = "softhsm2"
library = "{token.module}"
admins = ["{ADMIN}"]
call_timeout = 45

[[hsm_instances.slots]]
id = {slot}
password_env = "{PIN_VARIABLE}"
"""
    )
    path.chmod(0o600)
    return path


@pytest.fixture
async def database(
    anyio_backend: str,
    tmp_path: Path,
    token: SoftHsmToken,
    slot: int,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Database]:
    monkeypatch.setenv(PIN_VARIABLE, token.user_pin)
    config = load_config(write_config(tmp_path, token, slot, cache=16))
    async with Database.from_config(config) as db:
        yield db


def aes_request() -> tuple[SymmetricKey, Attributes]:
    attributes = Attributes(
        cryptographic_algorithm=CryptographicAlgorithm.AES, cryptographic_length=256, sensitive=True
    )
    return symmetric_key_object(bytes(32)), attributes


def public_request() -> tuple[PublicKey, Attributes]:
    obj = PublicKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentRSAPublicKey,
            cryptographic_algorithm=CryptographicAlgorithm.RSA,
        )
    )
    return obj, Attributes(cryptographic_algorithm=CryptographicAlgorithm.RSA)


def rsa_request() -> tuple[PrivateKey, Attributes]:
    obj = PrivateKey(
        block=KeyBlock(
            key_format_type=KeyFormatType.TransparentRSAPrivateKey,
            cryptographic_algorithm=CryptographicAlgorithm.RSA,
        )
    )
    return obj, Attributes(cryptographic_algorithm=CryptographicAlgorithm.RSA)


async def test_from_config_routes_hsm_uids_to_an_hsm_store(database: Database, slot: int) -> None:
    [prefix] = database.objects_stores
    assert prefix == "hsm"  # one instance: the legacy prefix
    store = database.objects_stores[prefix]
    assert isinstance(store, HsmStore)
    assert database.encryption_oracle(f"hsm::{slot}::k") is store
    assert database.objects_store_for("a-uuid") is database.default_store
    assert isinstance(store.hsm, Pkcs11Hsm) and store.hsm.call_timeout == 45


async def test_hsm_keys_and_wrapped_database_keys(database: Database, slot: int) -> None:
    kek = f"hsm::{slot}::kek-{uuid.uuid4().hex}"
    sk = f"hsm::{slot}::rsa-{uuid.uuid4().hex}"

    # HSM keys: an admin creates them, anyone else is refused and nothing is made.
    with pytest.raises(UnauthorizedError, match="Only the HSM Admin can create HSM objects"):
        await database.create(kek, MALLORY, *aes_request(), ())
    with pytest.raises(UnauthorizedError):
        await database.atomic(MALLORY, [Create(sk, *rsa_request(), set())])
    assert await database.retrieve(kek) is None
    assert await database.retrieve(sk) is None
    assert await database.create(kek, ADMIN, *aes_request(), ()) == kek
    public = Create(None, *public_request(), set())  # the pair's public half goes with sk
    assert await database.atomic(ADMIN, [Create(sk, *rsa_request(), set()), public]) == [
        sk,
        sk + "_pk",
    ]
    oracle = database.encryption_oracle(kek)
    assert oracle is not None
    assert await oracle.get_key_type(kek) is KeyType.AES_KEY
    assert await oracle.get_key_type(sk) is KeyType.RSA_PRIVATE_KEY
    stub = await database.retrieve(kek)
    assert stub is not None and stub.attributes.sensitive is True  # never exported

    # 100 database keys, each wrapped by the sensitive HSM KEK, which Alice may use.
    keys: dict[str, bytes] = {}
    some_key = await database.create(None, ALICE, symmetric_key_object(bytes(32)), Attributes(), ())
    with pytest.raises(UnauthorizedError, match="may not use the key-encryption key"):
        await database.wrap_key(some_key, kek, ALICE)
    await database.grant_operations(kek, ALICE, {KmipOperation.Encrypt, KmipOperation.Decrypt})
    for _ in range(100):
        key = os.urandom(32)
        uid = await database.create(None, ALICE, symmetric_key_object(key), Attributes(), ())
        await database.wrap_key(uid, kek, ALICE)
        keys[uid] = key
    assert {found[0] for found in await database.find_wrapped_by(kek, ALICE)} == set(keys)

    for uid, key in keys.items():
        stored = await database.retrieve(uid)
        assert stored is not None and stored.object.wrapping_key_uid() == kek
        with await database.unwrap_key(uid, ALICE) as material:
            assert bytes(material) == key
            nonce = os.urandom(12)
            sealed = AESGCM(bytes(material)).encrypt(nonce, b"hello", None)
        assert AESGCM(key).decrypt(nonce, sealed, None) == b"hello"

    # Destroying the KEK makes every wrapped key unreadable, with an error saying why.
    await database.delete(kek)
    assert await database.retrieve(kek) is None
    some = list(keys)[-1]  # its material is in the unwrap cache: deleting the KEK dropped it
    with pytest.raises(InvalidRequestError, match=f"its key-encryption key {kek} does not exist"):
        await database.unwrap_key(some, ALICE)


async def test_protection_at_rest_from_config(
    anyio_backend: str,
    tmp_path: Path,
    token: SoftHsmToken,
    slot: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PIN_VARIABLE, token.user_pin)
    kek = f"hsm::{slot}::rest-{uuid.uuid4().hex}"
    setup = load_config(write_config(tmp_path, token, slot))
    async with Database.from_config(setup) as db:
        await db.create(kek, ADMIN, *aes_request(), ())
    config = load_config(write_config(tmp_path, token, slot, f'key_encryption_key = "{kek}"'))
    key = os.urandom(32)
    async with Database.from_config(config) as db:
        uid = await db.create(None, ALICE, symmetric_key_object(key), Attributes(), ())
        found = await db.retrieve(uid)
        assert found is not None
        value = found.object.key_block().key_value
        assert isinstance(value, PlainKeyValue)
        assert isinstance(value.key_material, TransparentSymmetricKey)
        assert bytes(value.key_material.key) == key
    for file in (tmp_path / "store").iterdir():
        assert key not in file.read_bytes()
