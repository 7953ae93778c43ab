"""Many AES operations in one GIL-free pass: the core's ``crypt_many``, the AES-GCM batch helpers
of ``hsm_ops`` and the façade's use of them (real SoftHSM2 token)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kms_iface import (
    CryptoAlgorithm,
    DecryptionError,
    EncryptedContent,
    HsmKeyAlgorithm,
    InvalidRequestError,
    Mechanism,
    SecretBytes,
    Session,
)
from kms_iface.errors import KeyHandleInvalidError, ObjectHandleInvalidError, Pkcs11Error
from kms_iface.pkcs11 import aes_key_template, hsm_ops
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11_hsm import Pkcs11Hsm

GCM = CryptoAlgorithm.AES_GCM


@pytest.fixture
def aes(session: Session) -> tuple[int, bytes]:
    """An exportable session AES-256 key and its value."""
    key = session.generate_key(
        ck.CKM_AES_KEY_GEN, aes_key_template(256, token=False, sensitive=False, extractable=True)
    )
    value = session.get_attributes(key, [ck.CKA_VALUE])[0]
    assert isinstance(value, SecretBytes)
    return key, bytes(value)


def gcm(iv: bytes, aad: bytes | None = None) -> Mechanism:
    return Mechanism.aes_gcm(iv, aad, 128)


# -- the core ------------------------------------------------------------------------------------


def test_crypt_many_matches_one_by_one(session: Session, aes: tuple[int, bytes]) -> None:
    key, value = aes
    ivs = [os.urandom(12) for _ in range(5)]
    inputs: list[Any] = [os.urandom(n) for n in (0, 1, 16, 4096, 70_000)]
    outs = session.crypt_many(False, [gcm(iv) for iv in ivs], [key] * 5, inputs)
    for iv, data, out in zip(ivs, inputs, outs, strict=True):
        assert type(out) is bytes
        assert out == session.encrypt(gcm(iv), key, data)
        assert out == AESGCM(value).encrypt(iv, data, None)
    plain = session.crypt_many(
        True, [gcm(iv) for iv in ivs], [key] * 5, [out for out in outs if type(out) is bytes]
    )
    for data, back in zip(inputs, plain, strict=True):
        assert type(back) is SecretBytes and bytes(back) == data


def test_the_first_failure_is_returned_and_the_rest_not_run(
    session: Session, aes: tuple[int, bytes]
) -> None:
    key, value = aes
    ivs = [os.urandom(12) for _ in range(4)]
    sealed = [AESGCM(value).encrypt(iv, b"secret %d" % i, None) for i, iv in enumerate(ivs)]
    tampered = bytearray(sealed[1])
    tampered[0] ^= 1
    outs = session.crypt_many(
        True, [gcm(iv) for iv in ivs], [key] * 4, [sealed[0], tampered, sealed[2], sealed[3]]
    )
    assert type(outs[0]) is SecretBytes and bytes(outs[0]) == b"secret 0"
    assert isinstance(outs[1], DecryptionError)
    assert outs[2:] == [None, None]
    assert not session.operation_active
    assert session.encrypt(gcm(ivs[0]), key, b"x")  # the session goes on

    stale = session.crypt_many(False, [gcm(ivs[0]), gcm(ivs[1])], [key, 0x7FFF_FFF0], [b"a", b"b"])
    assert type(stale[0]) is bytes
    assert isinstance(stale[1], (KeyHandleInvalidError, ObjectHandleInvalidError))
    assert isinstance(stale[1], Pkcs11Error) and stale[1].function == "C_EncryptInit"


def test_crypt_many_checks_every_item_before_any_call(
    session: Session, aes: tuple[int, bytes]
) -> None:
    key, _ = aes
    iv = os.urandom(12)
    with pytest.raises(InvalidRequestError, match="shorter than its 16-byte tag"):
        session.crypt_many(True, [gcm(iv), gcm(iv)], [key, key], [bytes(32), bytes(15)])
    with pytest.raises(InvalidRequestError, match="predictable output size"):
        session.crypt_many(False, [Mechanism(ck.CKM_RSA_PKCS)], [key], [b"x"])
    with pytest.raises(InvalidRequestError, match="one mechanism and one key per input"):
        session.crypt_many(False, [gcm(iv)], [key, key], [b"x"])
    with pytest.raises(TypeError):
        session.crypt_many(False, ["not a mechanism"], [key], [b"x"])  # type: ignore[list-item]
    assert session.crypt_many(False, [], [], []) == []
    held = bytearray(b"resizable")
    session.crypt_many(False, [gcm(iv)], [key], [held])
    held.extend(b" again")  # no buffer export was left behind


# -- hsm_ops ---------------------------------------------------------------------------------------


def test_gcm_helpers_keep_the_single_layouts(session: Session, aes: tuple[int, bytes]) -> None:
    key, value = aes
    data: list[Any] = [b"one", b"", os.urandom(5000)]
    aads: list[Any] = [b"aad", None, b""]
    sealed = hsm_ops.gcm_encrypt_many(session, [key] * 3, data, aads)
    for item, aad, content in zip(data, aads, sealed, strict=True):
        assert content is not None and content.iv is not None and content.tag is not None
        assert len(content.iv) == 12 and len(content.tag) == 16
        blob = content.iv + content.ciphertext + content.tag
        assert AESGCM(value).decrypt(content.iv, content.ciphertext + content.tag, aad) == item
        assert bytes(hsm_ops.decrypt(session, key, GCM, blob, aad=aad)) == item
    assert len({content.iv for content in sealed if content is not None}) == 3

    blobs: list[Any] = [
        (c.iv or b"") + c.ciphertext + (c.tag or b"") for c in sealed if c is not None
    ]
    short = blobs[0][:27]
    opened = hsm_ops.gcm_decrypt_many(
        session, [key] * 4, [blobs[0], short, blobs[1], blobs[2]], [aads[0], None, None, b""]
    )
    assert opened[1] is None  # malformed: left for the one-by-one path and its error
    assert [bytes(p) for p in (opened[0], opened[2], opened[3]) if p is not None] == data


# -- the façade ------------------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def hsm(token: SoftHsmToken, slot: int, anyio_backend: str) -> AsyncIterator[Pkcs11Hsm]:
    async with Pkcs11Hsm(token.module, {slot: token.user_pin}) as opened:
        yield opened


def record_passes(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> tuple[list[int], Callable[..., Any]]:
    sizes: list[int] = []
    real = getattr(hsm_ops, name)

    def recorded(session: Session, keys: list[int], *rest: Any) -> Any:
        sizes.append(len(keys))
        return real(session, keys, *rest)

    monkeypatch.setattr(hsm_ops, name, recorded)
    return sizes, real


async def test_concurrent_gcm_calls_share_passes_and_each_gets_its_outcome(
    hsm: Pkcs11Hsm, slot: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id = f"batch-{uuid.uuid4().hex}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, False)
    await hsm.encrypt(slot, key_id, GCM, b"warm")  # the handle is cached from now on
    encrypt_passes, _ = record_passes(monkeypatch, "gcm_encrypt_many")
    decrypt_passes, _ = record_passes(monkeypatch, "gcm_decrypt_many")
    messages = [os.urandom(100 + i) for i in range(64)]
    sealed: dict[int, bytes] = {}
    opened: dict[int, object] = {}

    async def seal(i: int) -> None:
        content = await hsm.encrypt(slot, key_id, GCM, messages[i])
        assert content.iv is not None and content.tag is not None
        sealed[i] = content.iv + content.ciphertext + content.tag

    async with anyio.create_task_group() as group:
        for i in range(64):
            group.start_soon(seal, i)
    assert max(encrypt_passes) > 1  # queued calls ran together

    sealed[7] = sealed[7][:-1] + bytes([sealed[7][-1] ^ 1])  # a bad tag among good ones
    sealed[9] = sealed[9][:20]  # too short to be a GCM ciphertext

    async def unseal(i: int) -> None:
        try:
            opened[i] = bytes(await hsm.decrypt(slot, key_id, GCM, sealed[i]))
        except (DecryptionError, InvalidRequestError) as exc:
            opened[i] = exc

    async with anyio.create_task_group() as group:
        for i in range(64):
            group.start_soon(unseal, i)
    assert max(decrypt_passes) > 1
    assert isinstance(opened[7], DecryptionError)
    assert isinstance(opened[9], InvalidRequestError)
    assert str(opened[9]) == "Invalid Request: Invalid AES GCM ciphertext"
    for i in set(range(64)) - {7, 9}:
        assert opened[i] == messages[i]


async def test_a_key_destroyed_behind_the_cache_is_found_missing(
    hsm: Pkcs11Hsm, slot: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cached handle goes stale inside a pass: each job falls back and reports the key gone."""
    key_id = f"gone-{uuid.uuid4().hex}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, False)
    await hsm.encrypt(slot, key_id, GCM, b"warm")
    state = hsm.slot_state(slot)
    with state.pool.session() as session:
        handle = state.keyed(session, key_id.encode(), "aes", lambda _, found: found)
        session.destroy_object(handle)  # the handle cache does not know
    passes, _ = record_passes(monkeypatch, "gcm_encrypt_many")
    results: list[BaseException | None] = []

    async def seal() -> None:
        try:
            await hsm.encrypt(slot, key_id, GCM, b"data")
            results.append(None)
        except InvalidRequestError as exc:
            results.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(seal)
    assert passes  # the stale handle was met in a pass
    assert len(results) == 8
    assert all(isinstance(r, InvalidRequestError) for r in results)


async def test_one_bad_input_fails_alone(hsm: Pkcs11Hsm, slot: int) -> None:
    key_id = f"bad-{uuid.uuid4().hex}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, False)
    await hsm.encrypt(slot, key_id, GCM, b"warm")
    outcomes: dict[int, object] = {}

    async def seal(i: int) -> None:
        data: Any = memoryview(bytes(64))[::2] if i == 5 else bytes(64)
        try:
            outcomes[i] = await hsm.encrypt(slot, key_id, GCM, data)
        except InvalidRequestError as exc:
            outcomes[i] = exc

    async with anyio.create_task_group() as group:
        for i in range(24):
            group.start_soon(seal, i)
    assert str(outcomes.pop(5)) == "Invalid Request: data must be a contiguous buffer"
    assert all(isinstance(outcome, EncryptedContent) for outcome in outcomes.values())


async def test_a_pass_that_breaks_leaves_every_job_to_the_one_by_one_path(
    hsm: Pkcs11Hsm, slot: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection (no real token fails this way): the pass raises a non-HSM error."""
    key_id = f"broken-{uuid.uuid4().hex}"
    await hsm.create_key(slot, key_id, HsmKeyAlgorithm.AES, 256, False)
    await hsm.encrypt(slot, key_id, GCM, b"warm")
    calls: list[int] = []

    def broken(session: Session, keys: list[int], *rest: Any) -> Any:
        calls.append(len(keys))
        raise MemoryError

    monkeypatch.setattr(hsm_ops, "gcm_encrypt_many", broken)
    sealed: list[EncryptedContent] = []

    async def seal() -> None:
        sealed.append(await hsm.encrypt(slot, key_id, GCM, b"data"))

    async with anyio.create_task_group() as group:
        for _ in range(16):
            group.start_soon(seal)
    assert calls and len(sealed) == 16
