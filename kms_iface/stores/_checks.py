"""The checks every store applies to what it is given, before anything is written.

One place, so that LMDB and PostgreSQL accept exactly the same names, states and objects (and a
store can be copied into the other).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, get_args

import msgspec

from kms_iface.errors import InvalidRequestError, MalformedKmipError
from kms_iface.kmip import msgpack as kmip_msgpack
from kms_iface.kmip.attributes import Attributes
from kms_iface.kmip.enums import State
from kms_iface.kmip.objects import Object
from kms_iface.secrets import wipe
from kms_iface.stores.base import Create, Delete, UpdateObject, UpdateState, Upsert

__all__ = [
    "ATTRIBUTES_CHECK",
    "MAX_NAME_BYTES",
    "OBJECT_CHECK",
    "OBJECT_TYPES",
    "check_object",
    "check_operation",
    "check_state",
    "encode_checked",
    "name_bytes",
]

MAX_NAME_BYTES: Final = 250
"""The longest uid, owner, user or tag in UTF-8 bytes (LMDB's key size, less room)."""

OBJECT_TYPES: Final = get_args(Object)
OBJECT_CHECK: Final[msgspec.msgpack.Decoder[Any]] = kmip_msgpack.decoder(Object)  # type: ignore[arg-type]
ATTRIBUTES_CHECK: Final = kmip_msgpack.decoder(Attributes)
_ENCODER: Final = kmip_msgpack.encoder()


def name_bytes(value: object, what: str) -> bytes:
    """The UTF-8 of ``value`` if it is a name a store accepts (1 to 250 UTF-8 bytes)."""
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"{what} must be a non-empty string")
    try:
        raw = value.encode()
    except UnicodeEncodeError:
        raise InvalidRequestError(f"{what} is not valid Unicode text") from None
    if len(raw) > MAX_NAME_BYTES:
        raise InvalidRequestError(f"{what} is longer than {MAX_NAME_BYTES} UTF-8 bytes")
    return raw


def check_state(state: object) -> State:
    if not isinstance(state, State):
        raise InvalidRequestError(f"expected a State, got {type(state).__name__}")
    return state


def check_object(obj: object, attributes: object) -> None:
    if not isinstance(obj, OBJECT_TYPES):
        raise InvalidRequestError(f"expected a KMIP object, got {type(obj).__name__}")
    if not isinstance(attributes, Attributes):
        raise InvalidRequestError(f"expected KMIP Attributes, got {type(attributes).__name__}")


def encode_checked(value: Any, check: msgspec.msgpack.Decoder[Any], what: str) -> bytearray:
    """``value`` as MessagePack, after proving it decodes back: nothing unreadable is stored.

    The buffer may hold key material: the caller wipes it once written.
    """
    buffer = bytearray()
    try:
        _ENCODER.encode_into(value, buffer)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError) as exc:
        raise InvalidRequestError(f"the {what} cannot be stored: {type(exc).__name__}") from None
    try:
        decoded = kmip_msgpack.decode(check, buffer, what)
    except MalformedKmipError:
        wipe(buffer)
        raise
    if isinstance(decoded, OBJECT_TYPES):
        decoded.zeroize()
    return buffer


def check_operation(op: object, check_name: Callable[[object, str], object]) -> None:
    """What every store checks of an atomic operation: its kind, its uid (``check_name``, the
    store's own name rule), and the state it sets."""
    if not isinstance(op, (Create, Upsert, UpdateObject, UpdateState, Delete)):
        raise InvalidRequestError(f"{type(op).__name__} is not an atomic operation")
    if op.uid is not None:
        check_name(op.uid, "uid")
    if isinstance(op, (UpdateState, Upsert)):
        check_state(op.state)
