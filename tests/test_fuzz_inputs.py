"""Property tests of every public entry point that takes bytes or text from outside.

Ciphertext layouts (AES-GCM ``iv‖ct‖tag``, AES-CBC ``iv‖ct``, raw RSA) through a real SoftHSM2
session, HSM uids and the router's routing, tags, TOML configuration, the chunked stream format
and the PKCS#1 DER of wrapped keys: arbitrary and damaged input gives a typed ``InterfaceError``
or a valid result, never another exception or a hang, and no message quotes a secret.
"""

from __future__ import annotations

import io
import json
import os
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kms_iface import CryptoAlgorithm, SecretBytes
from kms_iface.config import ConfigError, parse_config
from kms_iface.database import Database
from kms_iface.der import integer_sequence
from kms_iface.errors import (
    DECRYPTION_FAILED_MESSAGE,
    DecryptionError,
    InterfaceError,
    InvalidRequestError,
    NotSupportedError,
)
from kms_iface.hsm_oracle import hsm_uid, parse_hsm_uid
from kms_iface.kmip import Attributes, KeyFormatType, Object, PrivateKey, VendorValue
from kms_iface.kmip.attributes import validate_tags
from kms_iface.kmip.objects import (
    ByteStringKeyMaterial,
    KeyBlock,
    KeyMaterial,
    PlainKeyValue,
    SymmetricKey,
    TransparentRSAPrivateKey,
    TransparentSymmetricKey,
)
from kms_iface.kmip.wrapping import unwrapped_object, wrapped_object
from kms_iface.pkcs11 import Module, Session, aes_key_template, hsm_ops, rsa_key_pair_templates
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.stores.base import ObjectsStore, PermissionsStore
from kms_iface.streaming import (
    HEADER_LENGTH,
    MIN_CHUNK_SIZE,
    StreamDecryptionError,
    decrypt_stream,
    encrypt_stream,
)
from tests.fuzz.strategies import FUZZ, any_text, assert_no_secret, counted, mutated, watchdog


@pytest.fixture(autouse=True)
def _watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    with watchdog(request.node.nodeid):
        yield


# ---------------------------------------------------------------------------------------------
# Ciphertext layouts through SoftHSM2.
# ---------------------------------------------------------------------------------------------

AES_KEY = bytes.fromhex("5e" * 8 + "c7" * 8 + "a1" * 8 + "3f" * 8)
"""The AES key's value, known so that no message can be shown to quote it."""


class Keys(typing.NamedTuple):
    session: Session
    aes: int
    rsa_public: int
    rsa_private: int


@pytest.fixture(scope="module")
def keys(module: Module, slot: int, token: SoftHsmToken) -> Iterator[Keys]:
    """Session objects only (nothing left on the token): one AES-256 key, one RSA-2048 pair."""
    pool = module.pool(slot, token.user_pin, size=1)
    try:
        with pool.session() as session:
            aes = session.create_object(aes_key_template(256, token=False, value=AES_KEY))
            public, private = session.generate_key_pair(
                ck.CKM_RSA_PKCS_KEY_PAIR_GEN, *rsa_key_pair_templates(2048, token=False)
            )
            try:
                yield Keys(session, aes, public, private)
            finally:
                for handle in (aes, public, private):
                    session.destroy_object(handle)
    finally:
        pool.close()


_RSA = [
    CryptoAlgorithm.RSA_PKCS_V15,
    CryptoAlgorithm.RSA_OAEP_SHA1,
    CryptoAlgorithm.RSA_OAEP_SHA256,
]
cbc_limits = st.none() | st.integers(16, 4096)
plaintexts = st.binary(max_size=300)


def _decrypt(keys: Keys, algorithm: CryptoAlgorithm, data: bytes, **kw: Any) -> bytes | None:
    """The plaintext, or None after a typed error that quotes neither key nor data."""
    key = keys.rsa_private if algorithm in _RSA else keys.aes
    try:
        with hsm_ops.decrypt(keys.session, key, algorithm, data, **kw) as plain:
            return bytes(plain)
    except InterfaceError as exc:
        assert_no_secret(exc, AES_KEY, data)
        if isinstance(exc, DecryptionError):
            assert exc.message == DECRYPTION_FAILED_MESSAGE and exc.rv is None
        return None


@FUZZ
@given(st.binary(max_size=120), st.none() | st.binary(max_size=32))
@example(bytes(27), None)
@example(bytes(28), b"")
@counted
def test_gcm_arbitrary_ciphertext(keys: Keys, data: bytes, aad: bytes | None) -> None:
    with pytest.raises((InvalidRequestError, DecryptionError)) as raised:
        hsm_ops.decrypt(keys.session, keys.aes, CryptoAlgorithm.AES_GCM, data, aad=aad)
    assert isinstance(raised.value, DecryptionError) == (len(data) >= 28)
    assert_no_secret(raised.value, AES_KEY, data)


@FUZZ
@given(plaintexts, st.none() | st.binary(max_size=16), st.data())
@counted
def test_gcm_damaged_ciphertext(
    keys: Keys, plaintext: bytes, aad: bytes | None, data: st.DataObject
) -> None:
    sealed = hsm_ops.encrypt(keys.session, keys.aes, CryptoAlgorithm.AES_GCM, plaintext, aad=aad)
    assert sealed.iv is not None and sealed.tag is not None
    layout = sealed.iv + sealed.ciphertext + sealed.tag
    assert _decrypt(keys, CryptoAlgorithm.AES_GCM, layout, aad=aad) == plaintext
    damaged = data.draw(mutated(layout))
    assert _decrypt(keys, CryptoAlgorithm.AES_GCM, damaged, aad=aad) is None  # authenticated
    with pytest.raises(InterfaceError) as raised:
        hsm_ops.decrypt(keys.session, keys.aes, CryptoAlgorithm.AES_GCM, damaged, aad=aad)
    assert_no_secret(raised.value, plaintext)


@FUZZ
@given(st.binary(max_size=160), cbc_limits)
@example(bytes(16), None)
@example(bytes(32), 16)
@counted
def test_cbc_arbitrary_ciphertext(keys: Keys, data: bytes, cbc_limit: int | None) -> None:
    plain = _decrypt(keys, CryptoAlgorithm.AES_CBC, data, cbc_limit=cbc_limit)
    well_formed = len(data) > 16 and len(data) % 16 == 0
    if not well_formed:
        assert plain is None
    if plain is not None:  # unauthenticated: valid padding by chance
        assert len(plain) < len(data) - 16


@FUZZ
@given(plaintexts, cbc_limits, st.data())
@counted
def test_cbc_round_trip_and_damage(
    keys: Keys, plaintext: bytes, cbc_limit: int | None, data: st.DataObject
) -> None:
    sealed = hsm_ops.encrypt(
        keys.session, keys.aes, CryptoAlgorithm.AES_CBC, plaintext, cbc_limit=cbc_limit
    )
    assert sealed.iv is not None
    layout = sealed.iv + sealed.ciphertext
    assert _decrypt(keys, CryptoAlgorithm.AES_CBC, layout, cbc_limit=cbc_limit) == plaintext
    assert _decrypt(keys, CryptoAlgorithm.AES_CBC, layout, cbc_limit=None) == plaintext
    _decrypt(keys, CryptoAlgorithm.AES_CBC, data.draw(mutated(layout)), cbc_limit=cbc_limit)


@FUZZ
@given(st.sampled_from(_RSA), st.binary(max_size=300), st.data())
@example(CryptoAlgorithm.RSA_PKCS_V15, b"", None)
@example(CryptoAlgorithm.RSA_OAEP_SHA256, bytes(256), None)
@example(CryptoAlgorithm.RSA_OAEP_SHA1, b"\xff" * 256, None)
@counted
def test_rsa_arbitrary_and_damaged_ciphertext(
    keys: Keys, algorithm: CryptoAlgorithm, data: bytes, draw: st.DataObject | None
) -> None:
    _decrypt(keys, algorithm, data)
    if draw is not None and algorithm is not CryptoAlgorithm.RSA_OAEP_SHA256:  # not in SoftHSM2
        plaintext = draw.draw(st.binary(max_size=64))
        sealed = hsm_ops.encrypt(keys.session, keys.rsa_public, algorithm, plaintext)
        assert _decrypt(keys, algorithm, sealed.ciphertext) == plaintext
        damaged = draw.draw(mutated(sealed.ciphertext))
        if algorithm is not CryptoAlgorithm.RSA_PKCS_V15:  # v1.5 may unpad anything by chance
            assert _decrypt(keys, algorithm, damaged) is None
        else:
            _decrypt(keys, algorithm, damaged)


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=60), st.none() | st.binary(max_size=8)), max_size=6))
@counted
def test_gcm_decrypt_many_arbitrary(keys: Keys, items: list[tuple[bytes, bytes | None]]) -> None:
    out = hsm_ops.gcm_decrypt_many(
        keys.session, [keys.aes] * len(items), [d for d, _ in items], [a for _, a in items]
    )
    assert out == [None] * len(items)


# ---------------------------------------------------------------------------------------------
# The chunked stream format.
# ---------------------------------------------------------------------------------------------


def _decrypt_stream(keys: Keys, data: bytes, *secrets: bytes) -> bytes | None:
    sink = io.BytesIO()
    try:
        decrypt_stream(keys.session, keys.aes, io.BytesIO(data), sink)
    except (InvalidRequestError, StreamDecryptionError) as exc:
        assert_no_secret(exc, AES_KEY, *secrets)
        return None
    return sink.getvalue()


_HEADER_START = b"KMSI-GCM\x01"


@FUZZ
@given(
    st.binary(max_size=200)
    | st.builds(
        lambda size, rest: _HEADER_START + size.to_bytes(4, "big") + rest,
        st.integers(0, 2**32 - 1) | st.sampled_from([MIN_CHUNK_SIZE, 1 << 24, (1 << 24) + 1]),
        st.binary(max_size=200),
    )
)
@counted
def test_stream_arbitrary_bytes(keys: Keys, data: bytes) -> None:
    assert _decrypt_stream(keys, data) is None


@FUZZ
@given(st.binary(max_size=3 * MIN_CHUNK_SIZE), st.data())
@counted
def test_stream_round_trip_and_damage(keys: Keys, plaintext: bytes, data: st.DataObject) -> None:
    sealed = io.BytesIO()
    encrypt_stream(keys.session, keys.aes, io.BytesIO(plaintext), sealed, chunk_size=MIN_CHUNK_SIZE)
    stream = sealed.getvalue()
    assert len(stream) >= HEADER_LENGTH
    assert _decrypt_stream(keys, stream) == plaintext
    assert _decrypt_stream(keys, data.draw(mutated(stream)), plaintext) is None


# ---------------------------------------------------------------------------------------------
# HSM uids and the router.
# ---------------------------------------------------------------------------------------------

prefix_words = st.text(st.sampled_from("hsmabc_0-"), min_size=1, max_size=4)
prefixes = st.lists(prefix_words, min_size=1, max_size=3).map("::".join)


@FUZZ
@given(any_text | st.builds(lambda p, t: p + "::" + t, prefixes, any_text), prefixes)
@example("hsm::" + "0" * 5000 + "1::k", "hsm")
@example("hsm::" + "9" * 5000 + "::k", "hsm")
@example("hsm::+::k", "hsm")
@counted
def test_parse_hsm_uid_arbitrary(uid: str, prefix: str) -> None:
    try:
        slot, key_id = parse_hsm_uid(uid, prefix)
    except InvalidRequestError:
        return
    assert 0 <= slot < 2**64 and key_id
    assert uid.startswith(prefix + "::") and uid.endswith("::" + key_id)


@FUZZ
@given(prefixes, st.integers(0, 2**64 - 1), any_text.filter(bool))
@counted
def test_hsm_uid_round_trip(prefix: str, slot: int, key_id: str) -> None:
    assert parse_hsm_uid(hsm_uid(prefix, slot, key_id), prefix) == (slot, key_id)


class _Named:
    """A stand-in store: routing does no I/O."""

    def __init__(self, name: str) -> None:
        self.name = name


def _reference_route(registered: list[str], uid: str) -> str | None:
    """The routing rules of ``kms_iface.database``, written the slow way."""
    if "::" not in uid:
        return ""
    matching = [p for p in registered if uid.startswith(p + "::")]
    if matching:
        return max(matching, key=len)
    return None if uid.startswith("hsm::") else ""


@FUZZ
@given(
    st.lists(prefixes | any_text, max_size=5),
    st.lists(any_text | st.builds(lambda p, t: p + "::" + t, prefixes, any_text), max_size=8),
)
@counted
def test_router_routing(candidates: list[str], uids: list[str]) -> None:
    default = typing.cast(ObjectsStore, _Named(""))
    db = Database(default, typing.cast(PermissionsStore, _Named("permissions")))
    registered: list[str] = []
    for prefix in candidates:
        try:
            db.register_objects_store(prefix, typing.cast(ObjectsStore, _Named(prefix)))
            db.register_encryption_oracle(prefix, typing.cast(Any, _Named(prefix)))
        except InvalidRequestError:
            words_ok = all(prefix.split("::")) and prefix.isprintable()
            assert prefix in registered or not words_ok or any(c.isspace() for c in prefix)
            continue
        assert all(prefix.split("::")) and prefix.isprintable()
        registered.append(prefix)
    for uid in uids + [p + "::k" for p in registered]:
        expected = _reference_route(registered, uid)
        try:
            store = db.objects_store_for(uid)
        except InvalidRequestError as exc:
            assert expected is None and uid in exc.message
        else:
            assert expected is not None and typing.cast(_Named, store).name == expected
        oracle = db.encryption_oracle(uid)
        if expected:
            assert typing.cast(_Named, oracle).name == expected
        else:
            assert oracle is None


# ---------------------------------------------------------------------------------------------
# Tags.
# ---------------------------------------------------------------------------------------------

tag_items = any_text | st.sampled_from([None, b"tag", 3, ""])


@FUZZ
@given(st.lists(tag_items, max_size=6) | any_text, st.sampled_from(["cosmian", "x"]))
@example(["\ud800"], "cosmian")
@example("tag", "cosmian")
@counted
def test_tags_arbitrary(tags: Any, vendor_id: str) -> None:
    attrs = Attributes()
    try:
        expected = validate_tags(tags)
    except InvalidRequestError:
        with pytest.raises(InvalidRequestError):
            attrs.set_tags(vendor_id, tags)
        assert attrs.get_tags(vendor_id) == set()
        return
    attrs.set_tags(vendor_id, tags)
    assert attrs.get_tags(vendor_id) == expected


@FUZZ
@given(any_text | st.builds(json.dumps, st.lists(any_text | st.integers(), max_size=4)))
@example('["\ud800"]')
@example("\ud800")
@counted
def test_stored_tag_attribute_arbitrary(value: str) -> None:
    attrs = Attributes()
    attrs.set_vendor_attribute("cosmian", "tag", VendorValue.text(value))
    try:
        tags = attrs.get_tags("cosmian")
    except InvalidRequestError:
        return
    assert all(isinstance(tag, str) for tag in tags)


# ---------------------------------------------------------------------------------------------
# TOML configuration.
# ---------------------------------------------------------------------------------------------

SECRET_PIN = "PIN-7f3a9c1e5b"
SECRET_DSN_PASSWORD = "pw-2c8e4a6b0d"


def _toml_value(value: Any) -> str:
    """``value`` as an inline TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


ints = st.integers(-(2**63), 2**63 - 1)
odd_values: st.SearchStrategy[Any] = st.booleans() | ints | st.text(max_size=12) | st.just([])
slots = st.fixed_dictionaries(
    {"id": st.integers(-2, 3) | ints},
    optional={
        "password": st.sampled_from([SECRET_PIN, "<NO_LOGIN>", ""]) | odd_values,
        "password_env": st.sampled_from(["KMS_FUZZ_PIN", "KMS_FUZZ_MISSING", ""]) | odd_values,
        "bogus": odd_values,
    },
)
instances = st.fixed_dictionaries(
    {"model": st.sampled_from(["softhsm2", "utimaco", "proteccio", "nope"]) | odd_values},
    optional={
        "slots": st.lists(slots, max_size=3) | odd_values,
        "library": st.sampled_from(["/usr/lib/x.so", ""]) | odd_values,
        "admins": st.lists(st.text(max_size=8), max_size=2) | odd_values,
        "prefix": prefixes | odd_values,
    },
)
stores = st.fixed_dictionaries(
    {"kind": st.sampled_from(["lmdb", "postgres", "sqlite"]) | odd_values},
    optional={
        "path": st.sampled_from(["/var/lib/kms", ""]) | odd_values,
        "dsn": st.sampled_from([f"postgresql://kms:{SECRET_DSN_PASSWORD}@db/kms", ""]) | odd_values,
        "dsn_env": st.sampled_from(["KMS_FUZZ_DSN", "KMS_FUZZ_MISSING"]) | odd_values,
    },
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "default_store": stores | odd_values,
        "vendor_id": st.sampled_from(["cosmian", ""]) | odd_values,
        "key_encryption_key": st.sampled_from(["hsm::0::kek", ""]) | odd_values,
        "unwrap_cache_size": st.integers(-1, 2_000_000) | odd_values,
        "hsm_instances": st.lists(instances, max_size=3) | odd_values,
        "extra": odd_values,
    },
)


def _parse(text: str) -> None:
    try:
        config = parse_config(text, source="fuzz.toml")
    except ConfigError as exc:
        assert exc.message and str(exc).startswith("Invalid Request: fuzz.toml")
        assert_no_secret(exc, SECRET_PIN, SECRET_DSN_PASSWORD)
        return
    shown = repr(config)
    assert SECRET_PIN not in shown and SECRET_DSN_PASSWORD not in shown
    config.zeroize()


@pytest.fixture(scope="module")
def _secret_environment() -> Iterator[None]:
    """Secrets in the environment for ``password_env`` and ``dsn_env``."""
    names = {
        "KMS_FUZZ_PIN": SECRET_PIN,
        "KMS_FUZZ_DSN": f"postgresql://kms:{SECRET_DSN_PASSWORD}@db/kms",
    }
    saved = {name: os.environ.get(name) for name in [*names, "KMS_FUZZ_MISSING"]}
    os.environ.update(names)
    os.environ.pop("KMS_FUZZ_MISSING", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.mark.usefixtures("_secret_environment")
@FUZZ
@given(configs)
@counted
def test_config_structured(document: dict[str, Any]) -> None:
    _parse("\n".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in document.items()))


@pytest.mark.usefixtures("_secret_environment")
@FUZZ
@given(any_text | st.binary(max_size=200).map(lambda b: b.decode("latin-1")), st.data())
@example('vendor_id = "a"\x00', None)
@counted
def test_config_arbitrary_and_damaged_text(text: str, data: st.DataObject | None) -> None:
    _parse(text)
    if data is not None:
        document = data.draw(configs)
        valid = "\n".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in document.items())
        damaged = data.draw(mutated(valid.encode()))
        _parse(damaged.decode("utf-8", "replace"))


# ---------------------------------------------------------------------------------------------
# PKCS#1 DER of a wrapped RSA key (kms_iface.kmip.wrapping.unwrapped_object).
# ---------------------------------------------------------------------------------------------

_FAKE_WRAPPED = b"\x01" * 40


def _wrapped(fmt: KeyFormatType) -> Object:
    """A stored wrapped key of format ``fmt`` (the wrapped bytes are not looked at)."""
    material: KeyMaterial
    cls: type[PrivateKey | SymmetricKey] = SymmetricKey
    if fmt is KeyFormatType.TransparentRSAPrivateKey:
        one = SecretBytes(b"\x03")
        material = TransparentRSAPrivateKey(
            modulus=b"\x0f", public_exponent=b"\x03", private_exponent=one, p=one, q=one,
            prime_exponent_p=one, prime_exponent_q=one, crt_coefficient=one,
        )  # fmt: skip
        cls = PrivateKey
    elif fmt is KeyFormatType.TransparentSymmetricKey:
        material = TransparentSymmetricKey(key=SecretBytes(bytes(16)))
    elif fmt is KeyFormatType.PKCS1:  # the DER is checked when wrapping
        material = ByteStringKeyMaterial(value=integer_sequence([b""] + [b"\x05"] * 8))
        cls = PrivateKey
    else:
        material = ByteStringKeyMaterial(value=SecretBytes(bytes(16)))
    block = KeyBlock(key_format_type=fmt, key_value=PlainKeyValue(key_material=material))
    return wrapped_object(cls(block), _FAKE_WRAPPED, "kek")


_FORMATS = [
    KeyFormatType.PKCS1,
    KeyFormatType.TransparentRSAPrivateKey,
    KeyFormatType.Raw,
    KeyFormatType.TransparentSymmetricKey,
]
_WRAPPED = {fmt: _wrapped(fmt) for fmt in _FORMATS}
magnitudes = st.binary(min_size=1, max_size=40).filter(lambda b: any(b))


def _unwrap(fmt: KeyFormatType, material: bytes) -> None:
    try:
        obj = unwrapped_object(_WRAPPED[fmt], material, Attributes(comment="c"))
    except (InvalidRequestError, NotSupportedError) as exc:
        assert_no_secret(exc, material)
        return
    assert obj.key_block() is not None and not obj.is_wrapped()


@FUZZ
@given(st.sampled_from(_FORMATS), st.binary(max_size=120))
@example(KeyFormatType.PKCS1, b"\x30\x84\xff\xff\xff\xff")
@example(KeyFormatType.PKCS1, b"\x30\x80")
@example(KeyFormatType.PKCS1, b"\x30\x03\x02\x01\x01")
@counted
def test_unwrap_arbitrary_material(fmt: KeyFormatType, material: bytes) -> None:
    _unwrap(fmt, material)


@FUZZ
@given(
    st.sampled_from([KeyFormatType.PKCS1, KeyFormatType.TransparentRSAPrivateKey]),
    st.lists(magnitudes, min_size=8, max_size=8),
    st.data(),
)
@counted
def test_unwrap_valid_and_damaged_der(
    fmt: KeyFormatType, integers: list[bytes], data: st.DataObject
) -> None:
    der = bytes(integer_sequence([b"", *integers]))
    obj = unwrapped_object(_WRAPPED[fmt], der)
    block = obj.key_block()
    assert block is not None and isinstance(block.key_value, PlainKeyValue)
    material = block.key_value.key_material
    if isinstance(material, TransparentRSAPrivateKey):
        assert bytes(material.modulus) == integers[0].lstrip(b"\0")
        assert bytes(typing.cast(SecretBytes, material.crt_coefficient)) == integers[7].lstrip(
            b"\0"
        )
    _unwrap(fmt, data.draw(mutated(der)))


# ---------------------------------------------------------------------------------------------
# Regressions: bugs the fuzzing found.
# ---------------------------------------------------------------------------------------------


def test_regression_slot_of_over_4300_digits_is_a_typed_error() -> None:
    """int() refuses strings of over 4300 digits: parse_hsm_uid raised ValueError."""
    with pytest.raises(InvalidRequestError, match="number too large to fit in target type"):
        parse_hsm_uid("hsm::" + "9" * 5000 + "::k", "hsm")
    assert parse_hsm_uid("hsm::" + "0" * 5000 + "7::k", "hsm") == (7, "k")


def test_regression_lone_surrogate_tags_are_typed_errors() -> None:
    """set_tags and get_tags raised UnicodeEncodeError on a lone surrogate."""
    with pytest.raises(InvalidRequestError, match="valid Unicode text"):
        Attributes().set_tags("cosmian", ["ok", "\ud800"])
    stored = Attributes()
    stored.set_vendor_attribute("cosmian", "tag", VendorValue.text('["\ud800"]'))
    with pytest.raises(InvalidRequestError, match="valid Unicode text"):
        stored.get_tags("cosmian")


def test_the_secret_check_tells_message_words_from_leaks() -> None:
    """The oracle's own bug, found by fuzzing: a short printable plaintext that is a word of a
    fixed message (b"KMSI-G" in "no KMSI-GCM header") is not a leak; a real one still is."""
    fixed = InvalidRequestError("not a kms-iface encrypted stream (no KMSI-GCM header)")
    assert_no_secret(fixed, b"KMSI-G")
    key = bytes(range(32))
    with pytest.raises(AssertionError):
        assert_no_secret(InvalidRequestError(f"bad key {key.hex()}"), key)
    with pytest.raises(AssertionError):
        assert_no_secret(
            InvalidRequestError("pin is correct-horse-battery"), b"correct-horse-battery"
        )
