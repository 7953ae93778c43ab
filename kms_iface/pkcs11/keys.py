"""Key management on one session: Cosmian's key templates and the rules of its HSM layer.

Every function takes a ``Session`` (one thread at a time) and makes the C calls itself; handle
caching and session lending belong to the caller (``kms_iface.pkcs11_hsm``). Ids are ``bytes``
here (``key_id_bytes`` converts); ids read back from the token are ``CKA_ID``, else
``CKA_LABEL`` (an RSA public key read through its label gets ``_pk``).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from kms_iface._pkcs11 import Session
from kms_iface.errors import (
    GeneralError,
    HsmError,
    InvalidRequestError,
    NotSupportedError,
    ObjectHandleInvalidError,
)
from kms_iface.hsm import (
    AesKeyMaterial,
    HsmObject,
    HsmObjectFilter,
    KeyId,
    KeyMetadata,
    KeyType,
    RsaPrivateKeyMaterial,
    RsaPublicKeyMaterial,
    parse_label_metadata,
)
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.templates import aes_key_template, rsa_key_pair_templates
from kms_iface.secrets import SecretBytes

if TYPE_CHECKING:
    from kms_iface._pkcs11 import AttributeValue, TemplateValue

    Template = list[tuple[int, TemplateValue]]

__all__ = [
    "AES_KEY_BITS",
    "OBJECT_NOT_FOUND",
    "RSA_KEY_BITS",
    "SENSITIVE_KEY_MESSAGE",
    "aes_template",
    "check_aes_bits",
    "check_rsa_bits",
    "classify",
    "create_aes_key",
    "create_rsa_key_pair",
    "export",
    "find",
    "find_hmac_key",
    "find_key",
    "format_ck_date",
    "get_key_dates",
    "get_key_metadata",
    "get_key_type",
    "id_text",
    "is_hmac_key",
    "key_id_bytes",
    "parse_ck_date",
    "read_id",
    "require_key",
    "set_key_dates",
    "set_key_label",
    "wrong_key_type",
]

AES_KEY_BITS: Final = (128, 256)
RSA_KEY_BITS: Final = (1024, 2048, 3072, 4096)
OBJECT_NOT_FOUND: Final = "Object not found"
SENSITIVE_KEY_MESSAGE: Final = "This key is sensitive and cannot be exported from the HSM."

_CLASS_AND_TYPE: Final = (ck.CKA_CLASS, ck.CKA_KEY_TYPE)
_FILTERS: Final[dict[HsmObjectFilter, tuple[tuple[int, int], ...]]] = {
    HsmObjectFilter.ANY: (),
    HsmObjectFilter.AES_KEY: ((ck.CKA_CLASS, ck.CKO_SECRET_KEY), (ck.CKA_KEY_TYPE, ck.CKK_AES)),
    HsmObjectFilter.RSA_KEY: ((ck.CKA_KEY_TYPE, ck.CKK_RSA),),
    HsmObjectFilter.RSA_PRIVATE_KEY: (
        (ck.CKA_CLASS, ck.CKO_PRIVATE_KEY),
        (ck.CKA_KEY_TYPE, ck.CKK_RSA),
    ),
    HsmObjectFilter.RSA_PUBLIC_KEY: (
        (ck.CKA_CLASS, ck.CKO_PUBLIC_KEY),
        (ck.CKA_KEY_TYPE, ck.CKK_RSA),
    ),
}
_KIND: Final = {
    KeyType.AES_KEY: "an AES key",
    KeyType.RSA_PRIVATE_KEY: "an RSA private key",
    KeyType.RSA_PUBLIC_KEY: "an RSA public key",
    None: "of a key type this HSM interface does not handle",
}
# Secret key types that HMAC mechanisms take (CKK_GENERIC_SECRET and the CKK_SHA*_HMAC types).
_HMAC_KEY_TYPES: Final = frozenset(
    {
        ck.CKK_GENERIC_SECRET,
        ck.CKK_SHA_1_HMAC,
        ck.CKK_SHA224_HMAC,
        ck.CKK_SHA256_HMAC,
        ck.CKK_SHA384_HMAC,
        ck.CKK_SHA512_HMAC,
    }
)
_EMPTY_DATES: Final = (b"", b"\0" * 8, b"0" * 8)


# -- ids -------------------------------------------------------------------------------------

MAX_ID_BYTES: Final = 1024


def key_id_bytes(key_id: KeyId) -> bytes:
    """An id as the token stores it: ``str`` ids as UTF-8 (lone surrogates kept as bytes).

    Ids are non-empty text or bytes; anything else raises ``InvalidRequestError``.
    """
    if isinstance(key_id, str):
        try:
            raw = key_id.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise InvalidRequestError("a key id must be valid Unicode text") from None
    elif isinstance(key_id, (bytes, bytearray, memoryview)):
        raw = bytes(key_id)
    else:
        raise InvalidRequestError(f"a key id must be str or bytes, not {type(key_id).__name__}")
    if not raw:
        raise InvalidRequestError("a key id cannot be empty")
    if len(raw) > MAX_ID_BYTES:
        raise InvalidRequestError(f"a key id is longer than {MAX_ID_BYTES} bytes")
    return raw


def id_text(raw: bytes) -> str:
    """The inverse of ``key_id_bytes``: bytes that are not UTF-8 survive as lone surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def classify(object_class: AttributeValue, key_type: AttributeValue) -> KeyType | None:
    """The interface's key type for a CKA_CLASS / CKA_KEY_TYPE pair (None: not handled)."""
    if key_type == ck.CKK_AES and object_class == ck.CKO_SECRET_KEY:
        return KeyType.AES_KEY
    if key_type == ck.CKK_RSA:
        if object_class == ck.CKO_PRIVATE_KEY:
            return KeyType.RSA_PRIVATE_KEY
        if object_class == ck.CKO_PUBLIC_KEY:
            return KeyType.RSA_PUBLIC_KEY
    return None


def is_hmac_key(object_class: AttributeValue, key_type: AttributeValue) -> bool:
    """Whether a CKA_CLASS / CKA_KEY_TYPE pair is an HMAC key: a secret key of type
    CKK_GENERIC_SECRET or CKK_SHA*_HMAC. Such keys have no ``KeyType``: ``classify`` gives None,
    so ``find`` skips them and ``get_key_type`` reports None, as for any unhandled type."""
    return object_class == ck.CKO_SECRET_KEY and key_type in _HMAC_KEY_TYPES


def get_key_type(session: Session, handle: int) -> KeyType | None:
    """The object's key type, in one attribute read (None: a type this interface skips)."""
    object_class, key_type = session.get_attributes(handle, _CLASS_AND_TYPE)
    return classify(object_class, key_type)


def _id_from(raw_id: AttributeValue, label: AttributeValue, key_type: KeyType | None) -> bytes:
    if isinstance(raw_id, bytes) and raw_id:
        return raw_id
    if isinstance(label, bytes) and label:
        if key_type is KeyType.RSA_PUBLIC_KEY and not label.endswith(b"_pk"):
            return label + b"_pk"
        return label
    return b""


def read_id(session: Session, handle: int, key_type: KeyType | None = None) -> bytes:
    """The object's id: CKA_ID, else CKA_LABEL (+ ``_pk`` for an RSA public key); b"" if none."""
    raw_id, label = session.get_attributes(handle, (ck.CKA_ID, ck.CKA_LABEL))
    return _id_from(raw_id, label, key_type)


# -- creation --------------------------------------------------------------------------------


def _exists(session: Session, key_id: bytes, batch: int) -> bool:
    """Whether an object has exactly this CKA_ID or CKA_LABEL."""
    return bool(session.find_objects([(ck.CKA_ID, key_id)], batch, 1)) or bool(
        session.find_objects([(ck.CKA_LABEL, key_id)], batch, 1)
    )


def check_aes_bits(bits: int) -> None:
    """Refuse an AES key length other than 128 or 256 bits (Cosmian's message)."""
    if bits not in AES_KEY_BITS:
        raise InvalidRequestError(f"Invalid key length: {bits} bits, for and HSM AES key")


def check_rsa_bits(bits: int) -> None:
    """Refuse an RSA modulus length other than 1024, 2048, 3072 or 4096 bits."""
    if bits not in RSA_KEY_BITS:
        raise InvalidRequestError(f"Invalid key length: {bits} bits, for and HSM RSA key")


def aes_template(key_id: bytes, bits: int, sensitive: bool) -> Template:
    """Cosmian's AES template: token, private, encrypt/decrypt, extractable, LABEL = ID = id."""
    check_aes_bits(bits)
    return aes_key_template(
        bits,
        token=True,
        label=None,
        key_id=key_id,
        sensitive=sensitive,
        extractable=True,
        extra=[(ck.CKA_LABEL, key_id)],
    )


def create_aes_key(
    session: Session, key_id: bytes, bits: int, sensitive: bool, *, batch: int = 32
) -> int:
    """Generate a token AES key of 128 or 256 bits; an id already in use is refused."""
    template = aes_template(key_id, bits, sensitive)
    if _exists(session, key_id, batch):
        raise HsmError("A secret key with this id already exists")
    return session.generate_key(ck.CKM_AES_KEY_GEN, template)


def create_rsa_key_pair(
    session: Session,
    sk_id: bytes,
    pk_id: bytes,
    bits: int,
    sensitive: bool,
    *,
    batch: int = 32,
) -> tuple[int, int]:
    """Generate a token RSA key pair (e = 65537); returns (public, private) handles."""
    check_rsa_bits(bits)
    public, private = rsa_key_pair_templates(
        bits,
        token=True,
        key_id=sk_id,
        public_key_id=pk_id,
        sensitive=sensitive,
        extractable=True,
        extra_public=[(ck.CKA_LABEL, pk_id)],
        extra_private=[(ck.CKA_LABEL, sk_id)],
    )
    if _exists(session, sk_id, batch):
        raise HsmError("A private key with this id already exists")
    if _exists(session, pk_id, batch):
        raise HsmError("A public key with this id already exists")
    return session.generate_key_pair(ck.CKM_RSA_PKCS_KEY_PAIR_GEN, public, private)


# -- lookup ----------------------------------------------------------------------------------


def _by_id_or_label(session: Session, key_id: bytes, batch: int) -> list[int]:
    handles = session.find_objects([(ck.CKA_ID, key_id)], batch)
    if handles:
        return handles
    return session.find_objects([(ck.CKA_LABEL, key_id)], batch)


def find_key(
    session: Session,
    key_id: bytes,
    want: KeyType | None = None,
    *,
    batch: int = 32,
    purpose: str = "serve this operation",
) -> int | None:
    """The handle of the key ``key_id``, or None.

    CKA_ID first, then CKA_LABEL; an id ending ``_pk`` is retried without it (and without one
    trailing space). Several matches are told apart by key type: ``want`` when given, else a
    ``_pk`` id wants the RSA public key and any other id an AES or RSA private key. With
    ``want``, a key of another type raises ``InvalidRequestError`` (naming ``purpose``).
    """
    handles = _by_id_or_label(session, key_id, batch)
    if not handles and key_id.endswith(b"_pk"):
        # The public half of a pair whose public key carries the private key's id: only an RSA
        # public key qualifies, so that "<id>_pk" never reaches the AES or private key "<id>".
        if want not in (None, KeyType.RSA_PUBLIC_KEY):
            return None
        trimmed = key_id[:-3]
        if trimmed.endswith(b" "):
            trimmed = trimmed[:-1]
        if not trimmed:
            return None
        candidates = _by_id_or_label(session, trimmed, batch)
        publics = [h for h in candidates if get_key_type(session, h) is KeyType.RSA_PUBLIC_KEY]
        if len(publics) > 1:
            raise _multiple(key_id, True)
        return publics[0] if publics else None
    if not handles:
        return None
    if want is None and len(handles) == 1:
        return handles[0]
    public = want is KeyType.RSA_PUBLIC_KEY or (want is None and key_id.endswith(b"_pk"))
    if want is not None:
        accepted: Sequence[KeyType] = (want,)
    elif public:
        accepted = (KeyType.RSA_PUBLIC_KEY,)
    else:
        accepted = (KeyType.AES_KEY, KeyType.RSA_PRIVATE_KEY)
    chosen: int | None = None
    found: KeyType | None = None
    for handle in handles:
        key_type = get_key_type(session, handle)
        if key_type in accepted:
            if chosen is not None:
                raise _multiple(key_id, public)
            chosen = handle
        elif found is None:
            found = key_type
    if chosen is not None:
        return chosen
    if want is None:
        return handles[0]
    raise wrong_key_type(key_id, found, want, purpose)


def find_hmac_key(session: Session, key_id: bytes, *, batch: int = 32) -> int | None:
    """The handle of the HMAC key ``key_id`` (CKA_ID first, then CKA_LABEL), or None.

    Among several objects with the id, the one HMAC key is chosen (two raise ``HsmError``); an
    id that only names keys of other types (AES, RSA...) raises ``NotSupportedError``: MAC needs
    an HMAC key, which the token does not have under that id.
    """
    handles = _by_id_or_label(session, key_id, batch)
    if not handles:
        return None
    chosen: int | None = None
    found: KeyType | None = None
    for handle in handles:
        object_class, key_type = session.get_attributes(handle, _CLASS_AND_TYPE)
        if is_hmac_key(object_class, key_type):
            if chosen is not None:
                raise _multiple(key_id, False)
            chosen = handle
        elif found is None:
            found = classify(object_class, key_type)
    if chosen is None:
        raise NotSupportedError(
            f"The key '{key_id.decode('utf-8', 'replace')}' is {_KIND[found]}, which cannot "
            "be used to compute a MAC: that needs an HMAC (generic secret) key"
        )
    return chosen


def require_key(
    session: Session,
    key_id: bytes,
    want: KeyType | None = None,
    *,
    batch: int = 32,
    purpose: str = "serve this operation",
) -> int:
    """``find_key`` for an operation: a missing key raises ``InvalidRequestError``."""
    handle = find_key(session, key_id, want, batch=batch, purpose=purpose)
    if handle is None:
        raise InvalidRequestError(OBJECT_NOT_FOUND)
    return handle


def _multiple(key_id: bytes, public: bool) -> HsmError:
    label = key_id.decode("utf-8", "replace")
    if public:
        return HsmError(
            f"Multiple RSA public keys with label '{label}' found in the HSM slot. "
            "Labels must be unique per key type."
        )
    return HsmError(
        f"Multiple keys with label '{label}' and the same key type found in the HSM slot. "
        "Labels must be unique per key type."
    )


def wrong_key_type(
    key_id: bytes, found: KeyType | None, want: KeyType, purpose: str = "serve this operation"
) -> InvalidRequestError:
    """The error for a key that exists but cannot ``purpose`` (e.g. "decrypt")."""
    if found is KeyType.RSA_PUBLIC_KEY and want is KeyType.RSA_PRIVATE_KEY:
        return InvalidRequestError(f"An RSA public key cannot be used to {purpose}")
    return InvalidRequestError(
        f"The key '{key_id.decode('utf-8', 'replace')}' is {_KIND[found]}, which cannot be used "
        f"to {purpose}: that needs {_KIND[want]}"
    )


# -- find ------------------------------------------------------------------------------------


def find(session: Session, object_filter: HsmObjectFilter, *, batch: int = 32) -> list[bytes]:
    """Ids of the keys matching ``object_filter``; keys of other types (EC, DES, data objects,
    certificates...) and objects without an id or label are skipped."""
    handles = session.find_objects(list(_FILTERS[object_filter]), batch)
    ids: list[bytes] = []
    wanted = (ck.CKA_CLASS, ck.CKA_KEY_TYPE, ck.CKA_ID, ck.CKA_LABEL)
    for handle in handles:
        try:
            object_class, raw_type, raw_id, label = session.get_attributes(handle, wanted)
        except ObjectHandleInvalidError:
            continue  # destroyed since the search
        key_type = classify(object_class, raw_type)
        if key_type is None:
            continue
        key_id = _id_from(raw_id, label, key_type)
        if key_id:
            ids.append(key_id)
    return ids


# -- export and metadata ---------------------------------------------------------------------

_RSA_PRIVATE_ATTRS: Final = (
    ck.CKA_MODULUS,
    ck.CKA_PUBLIC_EXPONENT,
    ck.CKA_PRIVATE_EXPONENT,
    ck.CKA_PRIME_1,
    ck.CKA_PRIME_2,
    ck.CKA_EXPONENT_1,
    ck.CKA_EXPONENT_2,
    ck.CKA_COEFFICIENT,
    ck.CKA_ID,
    ck.CKA_LABEL,
)


def _wipe_all(values: Sequence[AttributeValue]) -> None:
    for value in values:
        if isinstance(value, SecretBytes):
            value.zeroize()


def export(session: Session, handle: int) -> HsmObject:
    """The key material and id; a key whose value cannot be read raises ``HsmError``."""
    key_type = get_key_type(session, handle)
    if key_type is KeyType.AES_KEY:
        value, raw_id, label = session.get_attributes(
            handle, (ck.CKA_VALUE, ck.CKA_ID, ck.CKA_LABEL)
        )
        if not isinstance(value, SecretBytes):
            raise HsmError(SENSITIVE_KEY_MESSAGE)
        return HsmObject(AesKeyMaterial(value), id_text(_id_from(raw_id, label, key_type)))
    if key_type is KeyType.RSA_PRIVATE_KEY:
        values = session.get_attributes(handle, _RSA_PRIVATE_ATTRS)
        n, e, d, p, q, dp, dq, qi, raw_id, label = values
        if not (
            isinstance(n, bytes)
            and isinstance(e, bytes)
            and isinstance(d, SecretBytes)
            and isinstance(p, SecretBytes)
            and isinstance(q, SecretBytes)
            and isinstance(dp, SecretBytes)
            and isinstance(dq, SecretBytes)
            and isinstance(qi, SecretBytes)
        ):
            _wipe_all(values)
            raise HsmError(SENSITIVE_KEY_MESSAGE)
        material = RsaPrivateKeyMaterial(n, e, d, p, q, dp, dq, qi)
        return HsmObject(material, id_text(_id_from(raw_id, label, key_type)))
    if key_type is KeyType.RSA_PUBLIC_KEY:
        n, e, raw_id, label = session.get_attributes(
            handle, (ck.CKA_MODULUS, ck.CKA_PUBLIC_EXPONENT, ck.CKA_ID, ck.CKA_LABEL)
        )
        if not (isinstance(n, bytes) and isinstance(e, bytes)):
            raise HsmError("the RSA public key's modulus or exponent cannot be read")
        return HsmObject(RsaPublicKeyMaterial(n, e), id_text(_id_from(raw_id, label, key_type)))
    raise NotSupportedError("export of this key type is not supported")


def parse_ck_date(raw: AttributeValue) -> datetime.date | None:
    """A CK_DATE (8 ASCII bytes ``YYYYMMDD``); empty, all-zero or malformed gives None."""
    if not isinstance(raw, bytes) or len(raw) != 8 or raw in _EMPTY_DATES:
        return None
    try:
        text = raw.decode("ascii")
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def format_ck_date(date: datetime.date | None) -> bytes:
    """A date as a CK_DATE; None as the empty value, which clears the attribute."""
    if date is None:
        return b""
    return f"{date.year:04d}{date.month:02d}{date.day:02d}".encode("ascii")


_METADATA_ATTRS: Final = (
    ck.CKA_CLASS,
    ck.CKA_KEY_TYPE,
    ck.CKA_ID,
    ck.CKA_LABEL,
    ck.CKA_VALUE_LEN,
    ck.CKA_MODULUS,
    ck.CKA_SENSITIVE,
)
_DATE_ATTRS: Final = (ck.CKA_START_DATE, ck.CKA_END_DATE)


def get_key_dates(
    session: Session, handle: int
) -> tuple[datetime.date | None, datetime.date | None]:
    """CKA_START_DATE and CKA_END_DATE (None when absent or empty).

    SoftHSM2 2.6 cannot read back a non-empty date of a private object (it stores the value in
    clear, then tries to decrypt it: CKR_GENERAL_ERROR, SoftHSMv2 issue 655); such dates read as
    None rather than making the whole metadata unreadable.
    """
    try:
        start, end = session.get_attributes(handle, _DATE_ATTRS)
    except GeneralError:
        return None, None
    return parse_ck_date(start), parse_ck_date(end)


def get_key_metadata(session: Session, handle: int) -> KeyMetadata | None:
    """Type, length, sensitivity, id, CK_DATE validity dates and the rotation metadata that the
    label carries (two attribute reads); None for a key type this interface does not handle."""
    values = session.get_attributes(handle, _METADATA_ATTRS)
    object_class, raw_type, raw_id, label, value_len, modulus, sensitive = values
    key_type = classify(object_class, raw_type)
    if key_type is None:
        return None
    if key_type is KeyType.AES_KEY:
        bits = value_len * 8 if isinstance(value_len, int) else 0
    else:
        bits = len(modulus) * 8 if isinstance(modulus, bytes) else 0
    rotation = parse_label_metadata(id_text(label)) if isinstance(label, bytes) else None
    start, end = get_key_dates(session, handle)
    return KeyMetadata(
        key_type=key_type,
        key_length_in_bits=bits,
        sensitive=sensitive is True,
        id=id_text(_id_from(raw_id, label, key_type)),
        start_date=start,
        end_date=end,
        rotate_name=rotation.rotate_name if rotation is not None else None,
        rotate_generation=rotation.rotate_generation if rotation is not None else None,
    )


def set_key_dates(
    session: Session,
    handle: int,
    start_date: datetime.date | None,
    end_date: datetime.date | None,
) -> None:
    """Set CKA_START_DATE and CKA_END_DATE (None clears)."""
    session.set_attributes(
        handle,
        [
            (ck.CKA_START_DATE, format_ck_date(start_date)),
            (ck.CKA_END_DATE, format_ck_date(end_date)),
        ],
    )


def set_key_label(session: Session, handle: int, label: str) -> None:
    """Set CKA_LABEL (UTF-8)."""
    session.set_attributes(handle, [(ck.CKA_LABEL, key_id_bytes(label))])
