"""MessagePack codec of the KMIP model: the storage format of the stores.

Maps keyed by KMIP's PascalCase names, enumerations by their KMIP integer, the Object union tagged
by ``ObjectType`` (its name), key material variants by ``_k``, absent optionals omitted. Secret
fields are written as MessagePack bin straight from the ``SecretBytes`` buffer and read back into
a fresh ``SecretBytes``. Encoders and decoders are built once per type.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

import msgspec

from kms_iface.errors import MalformedKmipError
from kms_iface.kmip.attributes import Attributes
from kms_iface.kmip.objects import Object
from kms_iface.secrets import SecretBytes

__all__ = [
    "attributes_from_msgpack",
    "attributes_to_msgpack",
    "decoder",
    "encoder",
    "object_from_msgpack",
    "object_to_msgpack",
]

T = TypeVar("T")

_PATH = re.compile(r" - at `(\$[^`]*)`$")


def _enc_hook(value: Any) -> Any:
    if isinstance(value, SecretBytes):
        return memoryview(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is SecretBytes and isinstance(value, (bytes, memoryview)):
        return SecretBytes(value)
    raise NotImplementedError


def encoder() -> msgspec.msgpack.Encoder:
    """A MessagePack encoder that understands the KMIP model (reuse it; it is thread-safe)."""
    return msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def decoder(kind: type[T]) -> msgspec.msgpack.Decoder[T]:
    """A MessagePack decoder of ``kind``, a KMIP type or a struct holding them (build it once)."""
    return msgspec.msgpack.Decoder(kind, dec_hook=_dec_hook)


MAX_MSGPACK_SIZE: Final = 64 * 1024 * 1024
"""Largest MessagePack input accepted, as for JSON."""

_MAX_REASON: Final = 120


def _short(text: str) -> str:
    # msgspec quotes offending values (an unknown tag, an enum value): never echo a whole blob.
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def decode(dec: msgspec.msgpack.Decoder[T], data: Any, what: str) -> T:
    """``dec.decode(data)`` with malformed input raised as ``MalformedKmipError`` with its path."""
    if len(data) > MAX_MSGPACK_SIZE:
        raise MalformedKmipError(f"{what} MessagePack is larger than {MAX_MSGPACK_SIZE} bytes")
    try:
        return dec.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        path = _short(match.group(1)) if match else "$"
        reason = _short(text[: match.start()] if match else text)
        raise MalformedKmipError(
            f"malformed {what} MessagePack at {path}: {reason}", path
        ) from None
    except msgspec.DecodeError as exc:
        raise MalformedKmipError(f"malformed {what} MessagePack: {_short(str(exc))}") from None
    except RecursionError:
        raise MalformedKmipError(f"malformed {what} MessagePack: nested too deeply") from None
    except UnicodeError:
        # A str (map key or value) that is not UTF-8; the message would quote the byte.
        raise MalformedKmipError(f"malformed {what} MessagePack: text is not valid UTF-8") from None


_ENCODER: Final = encoder()
_OBJECT_DECODER: Final[msgspec.msgpack.Decoder[Object]] = msgspec.msgpack.Decoder(
    Object, dec_hook=_dec_hook
)
_ATTRIBUTES_DECODER: Final = decoder(Attributes)


def _encode(value: Any, what: str) -> bytes:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError) as exc:
        raise MalformedKmipError(f"cannot write {what} MessagePack: {type(exc).__name__}") from None


def object_to_msgpack(obj: Object) -> bytes:
    """The MessagePack form of a KMIP object (values are not type-checked: decode to check)."""
    return _encode(obj, "KMIP object")


def object_from_msgpack(data: bytes | bytearray | memoryview) -> Object:
    """A KMIP object from its MessagePack form; malformed input raises ``MalformedKmipError``."""
    return decode(_OBJECT_DECODER, data, "KMIP object")


def attributes_to_msgpack(attributes: Attributes) -> bytes:
    """The MessagePack form of KMIP attributes (values are not type-checked: decode to check)."""
    return _encode(attributes, "KMIP attributes")


def attributes_from_msgpack(data: bytes | bytearray | memoryview) -> Attributes:
    """KMIP attributes from MessagePack; malformed input raises ``MalformedKmipError``."""
    return decode(_ATTRIBUTES_DECODER, data, "KMIP attributes")
