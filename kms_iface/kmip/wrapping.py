"""Keys kept in the default store wrapped by an HSM key-encryption key (KEK): the pure parts.

No I/O and no encryption here; the router encrypts and decrypts through the KEK's oracle:

    wrap:    plaintext = key_material_bytes(obj)        # raw key, or PKCS#1 DER (NoEncoding)
             wrapped = iv ‖ ct ‖ tag (AES-GCM) or the raw RSA-OAEP ciphertext, from the oracle
             store wrapped_object(obj, wrapped, kek_uid, parameters), the attributes unchanged
    unwrap:  kek_uid, parameters, wrapped = wrapping_parameters(stored)
             material = the oracle's decryption of wrapped
             unwrapped_object(stored, material, stored_attributes)

What can be wrapped, and the plaintext:

    object        KeyFormatType              key material              plaintext
    SymmetricKey  TransparentSymmetricKey    TransparentSymmetricKey   the key bytes
    SymmetricKey  Raw                        ByteStringKeyMaterial     the key bytes
    PrivateKey    TransparentRSAPrivateKey   TransparentRSAPrivateKey  PKCS#1 RSAPrivateKey DER
    PrivateKey    PKCS1                      ByteStringKeyMaterial     the DER itself (checked)

The stored form is Cosmian's for a wrapped key: the same object type, KeyFormatType, compression
type, algorithm and length; the KeyValue is the wrapped bytes (a KMIP Byte String); KeyWrappingData
is ``{Encrypt, EncryptionKeyInformation{kek uid, CryptographicParameters?}, NoEncoding}``. So
``wrapping_key_uid()`` gives the KEK uid, which the stores index for ``find_wrapped_by``. The
KeyFormatType is what tells unwrapping how to rebuild the key material. A Byte String key value has
no room for embedded attributes: they are dropped, the store keeps the object's attributes apart,
and ``unwrapped_object`` embeds the ones it is given.

PKCS#1 here is strict DER, two-prime keys only (version 0); RSA integers come back from it without
leading zero bytes (their value is kept, a fixed-width padding is not). Error messages name fields
and formats, never key bytes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Final, NamedTuple, TypeAlias

import msgspec

from kms_iface.der import integer_sequence
from kms_iface.errors import InvalidRequestError, NotSupportedError
from kms_iface.kmip._struct import kmip_name
from kms_iface.kmip.attributes import Attributes, CryptographicParameters
from kms_iface.kmip.enums import EncodingOption, KeyFormatType, WrappingMethod
from kms_iface.kmip.msgpack import object_to_msgpack
from kms_iface.kmip.objects import (
    ByteStringKeyMaterial,
    EncryptionKeyInformation,
    KeyBlock,
    KeyMaterial,
    KeyWrappingData,
    Object,
    PlainKeyValue,
    PrivateKey,
    SymmetricKey,
    TransparentRSAPrivateKey,
    TransparentSymmetricKey,
)
from kms_iface.secrets import SecretBytes

__all__ = [
    "UnwrappedKeyCache",
    "WrappingParameters",
    "key_material_bytes",
    "unwrapped_object",
    "wrapped_fingerprint",
    "wrapped_object",
    "wrapping_parameters",
]

BytesLike: TypeAlias = SecretBytes | bytes | bytearray | memoryview

_WrappableKey: TypeAlias = SymmetricKey | PrivateKey

# (object class, KeyFormatType) -> the key material variant that format holds.
_SUPPORTED: Final[dict[tuple[type, KeyFormatType], type]] = {
    (SymmetricKey, KeyFormatType.TransparentSymmetricKey): TransparentSymmetricKey,
    (SymmetricKey, KeyFormatType.Raw): ByteStringKeyMaterial,
    (PrivateKey, KeyFormatType.TransparentRSAPrivateKey): TransparentRSAPrivateKey,
    (PrivateKey, KeyFormatType.PKCS1): ByteStringKeyMaterial,
}

_SUPPORTED_TEXT: Final = (
    "a SymmetricKey in TransparentSymmetricKey or Raw format, or an RSA PrivateKey in "
    "TransparentRSAPrivateKey or PKCS1 format"
)


class WrappingParameters(NamedTuple):
    """How a stored key was wrapped: the KEK, the parameters it was used with, the wrapped bytes.

    ``cryptographic_parameters`` are those recorded at wrapping (None: the oracle's default for
    the KEK); pass them to ``CryptoAlgorithm.from_kmip`` to decrypt with the same algorithm.
    """

    kek_uid: str
    cryptographic_parameters: CryptographicParameters | None
    wrapped: bytes


# --- the key objects --------------------------------------------------------------------------


def _wrappable(obj: Object) -> tuple[_WrappableKey, KeyBlock]:
    """The key and its key block, when its kind and format can be wrapped; else NotSupported."""
    if not isinstance(obj, SymmetricKey | PrivateKey):
        raise NotSupportedError(
            f"a {type(obj).__name__} cannot be wrapped by an HSM key: only {_SUPPORTED_TEXT}"
        )
    block = obj.block
    if (type(obj), block.key_format_type) not in _SUPPORTED:
        raise NotSupportedError(
            f"a {type(obj).__name__} in KeyFormatType {block.key_format_type.name} cannot be "
            f"wrapped by an HSM key: convert it to {_SUPPORTED_TEXT}"
        )
    return obj, block


def _plain_material(obj: Object) -> tuple[_WrappableKey, KeyBlock, KeyMaterial]:
    """A wrappable key's plain key material, checked against its KeyFormatType."""
    if obj.is_wrapped():
        raise InvalidRequestError(
            f"the key is already wrapped by '{obj.wrapping_key_uid()}': unwrap it first"
        )
    key, block = _wrappable(obj)
    if not isinstance(block.key_value, PlainKeyValue):
        raise InvalidRequestError("the key has no key value to wrap (a metadata-only object)")
    material = block.key_value.key_material
    if not isinstance(material, _SUPPORTED[type(key), block.key_format_type]):
        raise InvalidRequestError(
            f"the key material ({type(material).__name__}) does not match the KeyFormatType "
            f"{block.key_format_type.name}"
        )
    return key, block, material


def _view(value: BytesLike, what: str) -> memoryview:
    """A view of key bytes that are still there (not wiped by ``zeroize()``)."""
    if isinstance(value, SecretBytes) and value.zeroized:
        raise InvalidRequestError(f"{what} has been wiped (zeroize() was called)")
    return memoryview(value)


def key_material_bytes(obj: Object) -> SecretBytes:
    """The plaintext to wrap: a symmetric key's bytes, an RSA private key's PKCS#1 DER.

    Returns a fresh ``SecretBytes`` the caller owns (wipe it once encrypted). A
    TransparentRSAPrivateKey needs all eight integers; a PKCS1 key's DER is checked (strict DER,
    two primes). An already wrapped key, a key without key material and an empty key raise
    ``InvalidRequestError``; other kinds and formats raise ``NotSupportedError``.
    """
    key, _, material = _plain_material(obj)
    if isinstance(material, TransparentSymmetricKey):
        return _symmetric_key(material.key)
    if isinstance(material, TransparentRSAPrivateKey):
        return _rsa_private_key_der(material)
    assert isinstance(material, ByteStringKeyMaterial)  # the other two rows of _SUPPORTED
    if isinstance(key, SymmetricKey):
        return _symmetric_key(material.value)
    der = _view(material.value, "the PKCS#1 key")
    _parse_rsa_private_key(der)
    return SecretBytes(der)


def _symmetric_key(key: SecretBytes) -> SecretBytes:
    view = _view(key, "the symmetric key")
    if len(view) == 0:
        raise InvalidRequestError(
            "the symmetric key is empty (a sensitive HSM key's stub has no key bytes)"
        )
    return SecretBytes(view)


def wrapped_object(
    obj: Object,
    wrapped: BytesLike,
    kek_uid: str,
    cryptographic_parameters: CryptographicParameters | None = None,
) -> Object:
    """The stored form of ``obj`` once its key material is wrapped by the key ``kek_uid``.

    ``wrapped`` is what the KEK's oracle returned for ``key_material_bytes(obj)``;
    ``cryptographic_parameters``, when given, are recorded in the EncryptionKeyInformation so
    that unwrapping uses the same algorithm. The object type, KeyFormatType, compression type,
    algorithm and length are kept; embedded attributes are dropped (see the module docstring).
    The same checks as ``key_material_bytes`` apply to ``obj``.
    """
    key, block, _ = _plain_material(obj)
    if len(memoryview(wrapped)) == 0:
        raise InvalidRequestError("the wrapped key bytes are empty")
    if not kek_uid:
        raise InvalidRequestError("the wrapping key uid is empty")
    return msgspec.structs.replace(
        key,
        block=KeyBlock(
            key_format_type=block.key_format_type,
            key_compression_type=block.key_compression_type,
            key_value=bytes(wrapped),
            cryptographic_algorithm=block.cryptographic_algorithm,
            cryptographic_length=block.cryptographic_length,
            key_wrapping_data=KeyWrappingData(
                wrapping_method=WrappingMethod.Encrypt,
                encryption_key_information=EncryptionKeyInformation(
                    unique_identifier=kek_uid,
                    cryptographic_parameters=cryptographic_parameters,
                ),
                encoding_option=EncodingOption.NoEncoding,
            ),
        ),
    )


def _wrapped_block(obj: Object) -> tuple[_WrappableKey, KeyBlock, WrappingParameters]:
    """A key wrapped as ``wrapped_object`` wraps one, its key block and its parameters."""
    data = obj.key_block().key_wrapping_data if obj.is_wrapped() else None
    if data is None:
        raise InvalidRequestError("the key is not wrapped")
    key, block = _wrappable(obj)
    if data.wrapping_method != WrappingMethod.Encrypt:
        raise NotSupportedError(
            f"wrapping method {data.wrapping_method.name} is not supported: only Encrypt"
        )
    if data.encoding_option != EncodingOption.NoEncoding:
        encoding = "TTLVEncoding" if data.encoding_option is None else data.encoding_option.name
        raise NotSupportedError(
            f"a key wrapped with EncodingOption {encoding} is not supported: only NoEncoding"
        )
    info = data.encryption_key_information
    if info is None:
        raise InvalidRequestError("the wrapped key names no wrapping key")
    if not isinstance(block.key_value, bytes) or not block.key_value:
        raise InvalidRequestError("the wrapped key has no wrapped bytes")
    return (
        key,
        block,
        WrappingParameters(info.unique_identifier, info.cryptographic_parameters, block.key_value),
    )


def wrapping_parameters(obj: Object) -> WrappingParameters:
    """The KEK uid, recorded parameters and wrapped bytes of a key stored by ``wrapped_object``.

    A key that is not wrapped, or has no wrapped bytes or KEK, raises ``InvalidRequestError``;
    another wrapping method or encoding (Cosmian's default TTLVEncoding included), object kind or
    format raises ``NotSupportedError``. Call it before decrypting to fail early.
    """
    return _wrapped_block(obj)[2]


def unwrapped_object(
    wrapped_obj: Object, material: BytesLike, attributes: Attributes | None = None
) -> Object:
    """The key back from its stored wrapped form and the decrypted ``material``.

    The key material is rebuilt as the KeyFormatType says, into fresh ``SecretBytes`` (the caller
    keeps ``material`` and may wipe it); ``attributes`` (typically the stored attributes) are
    embedded in the key value, as a shallow copy. Material that does not fit the format (empty,
    malformed PKCS#1 DER) raises ``InvalidRequestError``, multi-prime RSA ``NotSupportedError``;
    ``wrapped_obj`` is checked as by ``wrapping_parameters``.
    """
    key, block, _ = _wrapped_block(wrapped_obj)
    view = memoryview(material)
    if len(view) == 0:
        raise InvalidRequestError("the unwrapped key material is empty")
    key_material: KeyMaterial
    if block.key_format_type == KeyFormatType.TransparentSymmetricKey:
        key_material = TransparentSymmetricKey(key=SecretBytes(view))
    elif block.key_format_type == KeyFormatType.TransparentRSAPrivateKey:
        key_material = _rsa_private_key(_parse_rsa_private_key(view))
    else:  # Raw or PKCS1
        if block.key_format_type == KeyFormatType.PKCS1:
            _parse_rsa_private_key(view)
        key_material = ByteStringKeyMaterial(value=SecretBytes(view))
    embedded = None if attributes is None else msgspec.structs.replace(attributes)
    return msgspec.structs.replace(
        key,
        block=KeyBlock(
            key_format_type=block.key_format_type,
            key_compression_type=block.key_compression_type,
            key_value=PlainKeyValue(key_material=key_material, attributes=embedded),
            cryptographic_algorithm=block.cryptographic_algorithm,
            cryptographic_length=block.cryptographic_length,
        ),
    )


# --- PKCS#1 RSAPrivateKey DER -------------------------------------------------------------------
#
# RSAPrivateKey ::= SEQUENCE { version INTEGER (0), modulus, publicExponent, privateExponent,
#   prime1, prime2, exponent1, exponent2, coefficient: INTEGER }     (RFC 8017, A.1.2)

_RSA_INTEGERS: Final = (
    "modulus",
    "public_exponent",
    "private_exponent",
    "p",
    "q",
    "prime_exponent_p",
    "prime_exponent_q",
    "crt_coefficient",
)
_SEQUENCE: Final = 0x30
_INTEGER: Final = 0x02
_MAX_LENGTH_OCTETS: Final = 4  # 4 GiB: far beyond any key, and keeps lengths small


def _rsa_private_key_der(key: TransparentRSAPrivateKey) -> SecretBytes:
    """The PKCS#1 DER of a TransparentRSAPrivateKey, written straight into a SecretBytes."""
    missing = [kmip_name(field) for field in _RSA_INTEGERS if getattr(key, field) is None]
    if missing:
        raise InvalidRequestError(
            "PKCS#1 needs every integer of an RSA private key; this one lacks "
            f"{', '.join(missing)} (import it with its CRT parameters, or as PKCS1)"
        )
    magnitudes = [_magnitude(getattr(key, field), kmip_name(field)) for field in _RSA_INTEGERS]
    return integer_sequence([b"", *magnitudes])  # version 0, then the eight integers


def _magnitude(value: SecretBytes | bytes, name: str) -> memoryview:
    """The big-endian bytes of a positive integer, leading zero bytes off."""
    view = _view(value, f"the RSA integer {name}")
    start = 0
    while start < len(view) and view[start] == 0:
        start += 1
    if start == len(view):
        raise InvalidRequestError(f"the RSA integer {name} is zero")
    return view[start:]


def _malformed(reason: str) -> InvalidRequestError:
    return InvalidRequestError(f"malformed PKCS#1 RSAPrivateKey DER: {reason}")


def _parse_rsa_private_key(der: memoryview) -> list[memoryview]:
    """The eight integers of a PKCS#1 RSAPrivateKey (views into ``der``, leading zeros off).

    Strict DER: definite minimal lengths, minimal positive INTEGERs, version 0, nothing before
    or after the SEQUENCE's nine INTEGERs. Anything else raises ``InvalidRequestError``
    (version 1, multi-prime, ``NotSupportedError``).
    """
    start, end = _read_header(der, 0, len(der), _SEQUENCE, "the RSAPrivateKey SEQUENCE")
    if end != len(der):
        raise _malformed("bytes follow the RSAPrivateKey SEQUENCE")
    pos, version_end = _read_header(der, start, end, _INTEGER, "the version")
    if version_end - pos != 1 or der[pos] != 0:
        if version_end - pos == 1 and der[pos] == 1:
            raise NotSupportedError(
                "multi-prime RSA private keys (PKCS#1 version 1) are not supported"
            )
        raise _malformed("the version is not 0")
    pos = version_end
    integers = []
    for field in _RSA_INTEGERS:
        name = kmip_name(field)
        content, pos = _read_header(der, pos, end, _INTEGER, name)
        integers.append(_positive_integer(der[content:pos], name))
    if pos != end:
        raise _malformed("the SEQUENCE holds more than the nine INTEGERs of a version 0 key")
    return integers


def _read_header(der: memoryview, pos: int, end: int, tag: int, what: str) -> tuple[int, int]:
    """The start and end of the content of the element of type ``tag`` at ``pos``."""
    if end - pos < 2:
        raise _malformed(f"{what} is missing or truncated")
    if der[pos] != tag:
        raise _malformed(f"{what} is not {'an INTEGER' if tag == _INTEGER else 'a SEQUENCE'}")
    first = der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        octets = first & 0x7F
        if octets == 0:
            raise _malformed(f"{what} has an indefinite length")
        if octets > _MAX_LENGTH_OCTETS or octets > end - pos:
            raise _malformed(f"{what} has a length longer than the input")
        length = int.from_bytes(der[pos : pos + octets], "big")
        if length < 0x80 or der[pos] == 0:
            raise _malformed(f"{what} has a length that is not minimally encoded")
        pos += octets
    if length > end - pos:
        raise _malformed(f"{what} is truncated")
    return pos, pos + length


def _positive_integer(content: memoryview, name: str) -> memoryview:
    if len(content) == 0:
        raise _malformed(f"{name} is an empty INTEGER")
    if content[0] & 0x80:
        raise _malformed(f"{name} is negative")
    if content[0] != 0:
        return content
    if len(content) == 1:
        raise _malformed(f"{name} is zero")
    if content[1] < 0x80:
        raise _malformed(f"{name} is not minimally encoded")
    return content[1:]


def _rsa_private_key(integers: list[memoryview]) -> TransparentRSAPrivateKey:
    """A TransparentRSAPrivateKey from parsed integers; the private ones copied into SecretBytes."""
    n, e, d, p, q, dp, dq, qinv = integers
    return TransparentRSAPrivateKey(
        modulus=bytes(n),
        public_exponent=bytes(e),
        private_exponent=SecretBytes(d),
        p=SecretBytes(p),
        q=SecretBytes(q),
        prime_exponent_p=SecretBytes(dp),
        prime_exponent_q=SecretBytes(dq),
        crt_coefficient=SecretBytes(qinv),
    )


# --- the cache ------------------------------------------------------------------------------------


def wrapped_fingerprint(wrapped_obj: Object) -> bytes:
    """A SHA-256 digest of a wrapped object's storage form: changes whenever the object does.

    Only wrapped objects are accepted (a plain object's encoding would hold its key bytes in an
    unwipeable ``bytes``); others raise ``InvalidRequestError``.
    """
    if not wrapped_obj.is_wrapped():
        raise InvalidRequestError("only a wrapped object has a fingerprint")
    return hashlib.sha256(object_to_msgpack(wrapped_obj)).digest()


class UnwrappedKeyCache:
    """A small LRU cache of unwrapped key material, which wipes whatever leaves it.

    One entry per uid, holding the fingerprint (``wrapped_fingerprint``) of the stored object the
    material came from: a lookup with another fingerprint misses and wipes the stale entry, so any
    change of the stored object invalidates it. At most ``max_entries`` entries: the least
    recently used one is wiped and dropped first; ``invalidate`` and ``clear`` wipe too; 0
    disables the cache. Material is copied in by ``put`` (the caller keeps its buffer) and out by
    ``get`` (a fresh copy the caller owns), so no caller's buffer is ever wiped under it and no
    eviction touches a buffer in use. Permissions are the caller's business: check them first.

    Thread safety: every method is synchronous (no ``await``, so tasks of one event loop never
    interleave inside one) and runs under a lock, so worker threads may share the cache too.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 0:
            raise InvalidRequestError("the cache size must be 0 (disabled) or more")
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[bytes, SecretBytes]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def max_entries(self) -> int:
        """The most entries kept (0: the cache is disabled)."""
        return self._max_entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, uid: str, fingerprint: bytes) -> SecretBytes | None:
        """A copy of the material cached for ``uid`` at ``fingerprint``, or None."""
        with self._lock:
            entry = self._entries.get(uid)
            if entry is None:
                return None
            if entry[0] != fingerprint:
                del self._entries[uid]
                entry[1].zeroize()
                return None
            self._entries.move_to_end(uid)
            return SecretBytes(entry[1])

    def put(self, uid: str, fingerprint: bytes, material: BytesLike) -> None:
        """Cache a copy of ``material`` for ``uid`` at ``fingerprint`` (replacing any entry)."""
        if self._max_entries == 0:
            return
        copy = SecretBytes(material)
        with self._lock:
            old = self._entries.pop(uid, None)
            self._entries[uid] = (fingerprint, copy)
            while len(self._entries) > self._max_entries:
                _, (_, evicted) = self._entries.popitem(last=False)
                evicted.zeroize()
        if old is not None:
            old[1].zeroize()

    def invalidate(self, uid: str) -> None:
        """Wipe and forget the entry of ``uid``, if any (the key was rewrapped, revoked, ...)."""
        with self._lock:
            entry = self._entries.pop(uid, None)
        if entry is not None:
            entry[1].zeroize()

    def clear(self) -> None:
        """Wipe and forget every entry."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for _, material in entries:
            material.zeroize()
