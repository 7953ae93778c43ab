"""Cosmian's JSON form of the KMIP model (serde's shape), for interchange.

The shape, as Cosmian KMS writes it with serde:

- maps keyed by KMIP's PascalCase names (the structs' encode names; vendor attributes are the key
  ``Attribute``); absent optionals are omitted, null reads as absent; fields with a non-None
  default (``Name.NameType``, ``UsageLimits.UsageLimitsUnit``) are always written, as serde does;
- enumerations by member name (``"AES"``, ``"TransparentSymmetricKey"``, ``"None"``); the legacy
  block cipher mode ``"LegacyNISTKeyWrap"`` is read as ``AESKeyWrapPadding`` and never written;
- every byte string, secret or not, as an array of integers 0..255; RSA, DSA and DH big integers
  are such arrays of their big-endian bytes (Cosmian's own big-integer serde form is not pinned
  down, so this is this library's documented choice, read back the same way);
- dates as RFC 3339 strings in UTC (``"2024-05-01T12:00:00Z"``); integer Unix seconds are read too;
- the ``Object`` union externally tagged, ``{"SymmetricKey": {...}}``, without ``ObjectType``
  inside;
- ``KeyValue`` is an integer array (the wrapped bytes) or ``{"KeyMaterial": ..., "Attributes"?}``;
- ``KeyMaterial`` is untagged: the enclosing ``KeyBlock``'s ``KeyFormatType`` picks the variant
  (``TransparentSymmetricKey`` -> ``{"Key": [...]}``, ``TransparentRSAPrivateKey`` -> ..., any
  other format such as Raw or PKCS8 -> the bare integer array of ``ByteStringKeyMaterial``);
- a vendor attribute value is ``{"_t": type, "_c": value}`` (TextString a string; Integer,
  LongInteger, Interval, DateTimeExtended an integer; Boolean a boolean; ByteString and BigInteger
  integer arrays; DateTime an RFC 3339 string).

Decoding parses the text once with ``msgspec.json`` (untyped) and then converts it with converters
derived from the struct definitions (``msgspec.structs.fields`` and ``msgspec.inspect``), built once
per struct class. Any malformed input (bad JSON, wrong type, unknown field or attribute, unknown
enumeration name or object type, out-of-range integer, byte outside 0..255, input too large or
nested too deeply) raises ``MalformedKmipError`` whose ``path`` names the bad field, such as
``$.SymmetricKey.KeyBlock.CryptographicLength``; messages never quote byte values. Secret fields are
read into ``SecretBytes`` through a scratch ``bytearray`` that is wiped at once.
"""

from __future__ import annotations

import datetime
import enum
import typing
from collections.abc import Callable
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from kms_iface.errors import MalformedKmipError
from kms_iface.kmip.attributes import _VENDOR_VALUE_PYTHON_TYPES, Attributes, VendorValue
from kms_iface.kmip.enums import BlockCipherMode, KeyFormatType
from kms_iface.kmip.objects import Object
from kms_iface.secrets import SecretBytes, wipe

__all__ = ["attributes_from_json", "attributes_to_json", "object_from_json", "object_to_json"]

MAX_JSON_SIZE: Final = 64 * 1024 * 1024
"""Largest JSON input accepted (bytes, or characters for ``str``)."""

# Names read as another member (and never written): Cosmian's pre-5.15 key-wrap mode name.
_ENUM_ALIASES: Final[dict[type, dict[str, Any]]] = {
    BlockCipherMode: {"LegacyNISTKeyWrap": BlockCipherMode.AESKeyWrapPadding},
}

# The JSON names of VendorValue's fields (serde's adjacent tagging).
_VENDOR_TYPE_KEY: Final = "_t"
_VENDOR_VALUE_KEY: Final = "_c"

_UTC: Final = datetime.UTC

_Context = KeyFormatType | None
_Decode = Callable[[Any, _Context], Any]
_Encode = Callable[[Any, _Context], Any]


class _Invalid(Exception):
    """A conversion failure; each enclosing converter prepends its path segment on the way out."""

    def __init__(self, expected: str, segment: str | None = None) -> None:
        super().__init__(expected)
        self.expected = expected
        self.segments: list[str] = [] if segment is None else [segment]

    def path(self) -> str:
        return "$" + "".join(reversed(self.segments))


def _kind(value: Any) -> str:
    """The JSON kind of a decoded value, for messages (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _name(text: str) -> str:
    """A JSON key or name quoted for a message, cut short."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


def _key_segment(key: str) -> str:
    """The path segment of a JSON key (a long unknown key is cut short)."""
    return "." + (key if len(key) <= 64 else key[:61] + "...")


# ---------------------------------------------------------------------------------------------
# Leaf converters.
# ---------------------------------------------------------------------------------------------


def _int_codec(low: int | None, high: int | None) -> tuple[_Decode, _Encode]:
    bounds = (
        "an integer"
        if low is None and high is None
        else f"an integer in {'-inf' if low is None else low}..{'inf' if high is None else high}"
    )

    def check_range(value: int) -> int:
        if (low is not None and value < low) or (high is not None and value > high):
            raise _Invalid(f"expected {bounds}, got an integer out of range")
        return value

    def decode(value: Any, _ctx: _Context) -> int:
        if type(value) is not int:
            raise _Invalid(f"expected {bounds}, got {_kind(value)}")
        return check_range(value)

    def encode(value: Any, _ctx: _Context) -> int:
        # int subclasses (an IntFlag usage mask) are written as plain integers; bool is refused.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(f"expected {bounds}, got {type(value).__name__}")
        return check_range(int(value))

    return decode, encode


def _check_bool(value: Any, _ctx: _Context) -> bool:
    if type(value) is not bool:
        raise _Invalid(f"expected a boolean, got {_kind(value)}")
    return value


def _check_str(value: Any, _ctx: _Context) -> str:
    if type(value) is not str:
        raise _Invalid(f"expected a string, got {_kind(value)}")
    return value


_BYTE_ARRAY = "an array of integers 0..255"


def _bytearray_of(value: Any) -> bytearray:
    """The bytes of a JSON integer array, in a fresh (wipeable) bytearray."""
    if type(value) is not list:
        raise _Invalid(f"expected {_BYTE_ARRAY}, got {_kind(value)}")
    if value and set(map(type, value)) != {int}:
        index = next(i for i, item in enumerate(value) if type(item) is not int)
        raise _Invalid(f"expected an integer 0..255, got {_kind(value[index])}", f"[{index}]")
    try:
        return bytearray(value)
    except ValueError:
        index = next(i for i, item in enumerate(value) if not 0 <= item <= 255)
        raise _Invalid(
            "expected an integer 0..255, got an integer out of range", f"[{index}]"
        ) from None


def _decode_bytes(value: Any, _ctx: _Context) -> bytes:
    return bytes(_bytearray_of(value))


def _decode_secret(value: Any, _ctx: _Context) -> SecretBytes:
    scratch = _bytearray_of(value)
    try:
        return SecretBytes(scratch)
    finally:
        wipe(scratch)


def _encode_buffer(value: Any, _ctx: _Context) -> list[int]:
    try:
        view = memoryview(value)
    except TypeError:
        raise _Invalid(f"expected a bytes-like value, got {type(value).__name__}") from None
    with view:
        if view.ndim != 1 or view.itemsize != 1:
            raise _Invalid("expected a one-dimensional byte buffer")
        return view.cast("B").tolist()


def _enum_codec(enum_type: type[Any]) -> tuple[_Decode, _Encode]:
    members: dict[str, Any] = {**enum_type.__members__, **_ENUM_ALIASES.get(enum_type, {})}
    label = enum_type.__name__

    def decode(value: Any, _ctx: _Context) -> Any:
        if type(value) is not str:
            raise _Invalid(f"expected a {label} name (a string), got {_kind(value)}")
        try:
            return members[value]
        except KeyError:
            raise _Invalid(f"unknown {label} name {_name(value)}") from None

    def encode(value: Any, _ctx: _Context) -> str:
        # A plain int is looked up; a member of another enumeration is refused.
        if isinstance(value, enum.Enum) and not isinstance(value, enum_type):
            raise _Invalid(f"expected a {label} member, got {type(value).__name__}")
        try:
            member = enum_type(value)
        except (ValueError, TypeError):
            raise _Invalid(f"expected a {label} member") from None
        return str(member.name)

    return decode, encode


def _literal_codec(values: tuple[Any, ...]) -> tuple[_Decode, _Encode]:
    # Decoded values are replaced by the Literal's own (interned) objects, which the struct
    # defaults are too, so that msgspec's omit_defaults still recognises a default.
    allowed = {value: value for value in values}
    listing = ", ".join(sorted(map(str, values)))

    def check(value: Any, _ctx: _Context) -> Any:
        if type(value) is not str or value not in allowed:
            what = _kind(value) if type(value) is not str else _name(value)
            raise _Invalid(f"expected one of {listing}, got {what}")
        return allowed[value]

    return check, check


_DATETIME = "an RFC 3339 date-time with offset (or integer Unix seconds)"


def _decode_datetime(value: Any, _ctx: _Context) -> datetime.datetime:
    try:
        if type(value) is str:
            parsed = msgspec.convert(value, datetime.datetime)
            if parsed.tzinfo is None:
                raise _Invalid(f"expected {_DATETIME}, got a date-time without offset")
            return parsed.astimezone(_UTC)
        if type(value) is int:
            return datetime.datetime.fromtimestamp(value, _UTC)
    except (msgspec.ValidationError, OverflowError, ValueError, OSError):
        raise _Invalid(f"expected {_DATETIME}, got an invalid or out-of-range date") from None
    raise _Invalid(f"expected {_DATETIME}, got {_kind(value)}")


def _encode_datetime(value: Any, _ctx: _Context) -> str:
    if not isinstance(value, datetime.datetime) or value.tzinfo is None:
        raise _Invalid("expected a timezone-aware datetime")
    try:
        utc = value.astimezone(_UTC)
    except OverflowError:
        raise _Invalid("expected a datetime within years 1..9999 in UTC") from None
    return utc.replace(tzinfo=None).isoformat() + "Z"


# ---------------------------------------------------------------------------------------------
# Struct converters, derived once per struct class.
# ---------------------------------------------------------------------------------------------


class _Field:
    """One struct field: its Python and JSON names, converters, and whether it is required."""

    __slots__ = ("decode", "encode", "json_name", "name", "required")

    def __init__(
        self, name: str, json_name: str, decode: _Decode, encode: _Encode, required: bool
    ) -> None:
        self.name = name
        self.json_name = json_name
        self.decode = decode
        self.encode = encode
        self.required = required


class _StructCodec:
    """The JSON converters of one struct class, derived from its msgspec field definitions.

    A struct whose only field is ``value`` is a newtype: its JSON form is that field's form. A
    struct with a ``KeyFormatType`` field passes its value down to nested converters, where it
    picks the variant of the untagged key material union.
    """

    def __init__(self, cls: type[msgspec.Struct]) -> None:
        self.cls = cls
        self.fields: dict[str, _Field] = {}
        self.required: tuple[_Field, ...] = ()
        self.format_field: _Field | None = None
        self.newtype: _Field | None = None
        self.plan: tuple[tuple[str, str, _Encode, bool], ...] = ()

    def build(self) -> None:
        infos = msgspec.structs.fields(self.cls)
        types = mi.multi_type_info([info.type for info in infos])
        for info, kind in zip(infos, types, strict=True):
            decode, encode = _codec(kind)
            field = _Field(info.name, info.encode_name, decode, encode, info.required)
            self.fields[field.json_name] = field
            if _unwrap_optional(kind) == mi.EnumType(KeyFormatType):
                self.format_field = field
        self.required = tuple(field for field in self.fields.values() if field.required)
        self.plan = tuple(
            (field.name, field.json_name, field.encode, field.required)
            for field in self.fields.values()
        )
        if len(infos) == 1 and infos[0].name == "value":
            self.newtype = next(iter(self.fields.values()))

    def decode(self, value: Any, ctx: _Context) -> Any:
        cls = self.cls
        if self.newtype is not None:
            try:
                return cls(**{self.newtype.name: self.newtype.decode(value, ctx)})
            except (ValueError, TypeError) as exc:
                raise _Invalid(f"invalid {cls.__name__}: {exc}") from None
        if type(value) is not dict:
            raise _Invalid(f"expected a JSON object for {cls.__name__}, got {_kind(value)}")
        kwargs: dict[str, Any] = {}
        fmt = self.format_field
        if fmt is not None and value.get(fmt.json_name) is not None:
            # Decoded first: it picks the variant of nested key material.
            try:
                ctx = kwargs[fmt.name] = fmt.decode(value[fmt.json_name], ctx)
            except _Invalid as exc:
                exc.segments.append(_key_segment(fmt.json_name))
                raise
        fields = self.fields
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                raise _Invalid(f"unknown field {_name(key)} of {cls.__name__}", _key_segment(key))
            if (item is None and not field.required) or field is fmt:
                continue
            try:
                kwargs[field.name] = field.decode(item, ctx)
            except _Invalid as exc:
                exc.segments.append(_key_segment(key))
                raise
        for field in self.required:
            if field.name not in kwargs:
                raise _Invalid(
                    f"missing required field {field.json_name} of {cls.__name__}",
                    _key_segment(field.json_name),
                )
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise _Invalid(f"invalid {cls.__name__}: {exc}") from None

    def encode(self, obj: Any, ctx: _Context) -> Any:
        cls = self.cls
        if not isinstance(obj, cls):
            raise _Invalid(f"expected a {cls.__name__}, got {type(obj).__name__}")
        if self.newtype is not None:
            return self.newtype.encode(getattr(obj, self.newtype.name), ctx)
        fmt = self.format_field
        if fmt is not None:
            ctx = getattr(obj, fmt.name)
        out: dict[str, Any] = {}
        for name, json_name, encode, required in self.plan:
            item = getattr(obj, name)
            if item is None:
                if required:
                    raise _Invalid("a required field is None", _key_segment(json_name))
                continue
            try:
                out[json_name] = encode(item, ctx)
            except _Invalid as exc:
                exc.segments.append(_key_segment(json_name))
                raise
        return out


class _VendorValueCodec(_StructCodec):
    """``VendorValue`` as serde's adjacently tagged enum: ``{"_t": type, "_c": value}``.

    The only struct whose JSON form is not its fields: the form of ``_c`` depends on ``_t``.
    """

    def build(self) -> None:
        pass

    def decode(self, value: Any, ctx: _Context) -> Any:
        return _decode_vendor_value(value, ctx)

    def encode(self, obj: Any, ctx: _Context) -> Any:
        return _encode_vendor_value(obj, ctx)


_STRUCT_CODECS: dict[type, _StructCodec] = {}


def _struct_codec(cls: type[msgspec.Struct]) -> _StructCodec:
    """The (cached) codec of a struct class; registered before its fields are built (cycles)."""
    codec = _STRUCT_CODECS.get(cls)
    if codec is None:
        codec = _STRUCT_CODECS[cls] = (
            _VendorValueCodec(cls) if cls is VendorValue else _StructCodec(cls)
        )
        codec.build()
    return codec


def _unwrap_optional(kind: mi.Type) -> mi.Type:
    if isinstance(kind, mi.UnionType):
        rest = [t for t in kind.types if not isinstance(t, mi.NoneType)]
        if len(rest) == 1:
            return rest[0]
    return kind


def _codec(kind: mi.Type) -> tuple[_Decode, _Encode]:
    """Decode and encode converters for one msgspec type description."""
    if isinstance(kind, mi.StructType):
        codec = _struct_codec(kind.cls)
        return codec.decode, codec.encode
    if isinstance(kind, mi.IntType):
        if kind.gt is not None or kind.lt is not None or kind.multiple_of is not None:
            raise TypeError("only ge/le integer constraints are supported")
        return _int_codec(kind.ge, kind.le)
    if isinstance(kind, mi.BoolType):
        return _check_bool, _check_bool
    if isinstance(kind, mi.StrType):
        return _check_str, _check_str
    if isinstance(kind, mi.BytesType):
        return _decode_bytes, _encode_buffer
    if isinstance(kind, mi.CustomType) and kind.cls is SecretBytes:
        return _decode_secret, _encode_buffer
    if isinstance(kind, mi.EnumType):
        return _enum_codec(kind.cls)
    if isinstance(kind, mi.LiteralType):
        return _literal_codec(kind.values)
    if isinstance(kind, mi.DateTimeType):
        return _decode_datetime, _encode_datetime
    if isinstance(kind, mi.ListType):
        return _list_codec(kind.item_type)
    if isinstance(kind, mi.UnionType):
        return _union_codec(kind)
    raise TypeError(f"no JSON converter for {kind!r}")


def _list_codec(item_kind: mi.Type) -> tuple[_Decode, _Encode]:
    item_decode, item_encode = _codec(item_kind)

    def convert(convert_item: _Decode, value: Any, ctx: _Context) -> list[Any]:
        out = []
        for index, item in enumerate(value):
            try:
                out.append(convert_item(item, ctx))
            except _Invalid as exc:
                exc.segments.append(f"[{index}]")
                raise
        return out

    def decode(value: Any, ctx: _Context) -> list[Any]:
        if type(value) is not list:
            raise _Invalid(f"expected an array, got {_kind(value)}")
        return convert(item_decode, value, ctx)

    def encode(value: Any, ctx: _Context) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise _Invalid(f"expected a list, got {type(value).__name__}")
        return convert(item_encode, value, ctx)

    return decode, encode


# JSON kind of a decoded value -> the union member types that accept it.
_JSON_KINDS: Final[dict[type, tuple[type[mi.Type], ...]]] = {
    dict: (mi.StructType,),
    list: (mi.ListType, mi.BytesType, mi.CustomType),
    str: (mi.StrType, mi.EnumType, mi.LiteralType, mi.DateTimeType),
    int: (mi.IntType, mi.DateTimeType),
    bool: (mi.BoolType,),
}


def _python_types(kind: mi.Type) -> tuple[type, ...]:
    """The Python types a model value of this member type has (for encoding a union)."""
    if isinstance(kind, (mi.StructType, mi.EnumType, mi.CustomType)):
        return (kind.cls,)
    if isinstance(kind, mi.BytesType):
        return (bytes, bytearray, memoryview)
    table: dict[type[mi.Type], tuple[type, ...]] = {
        mi.IntType: (int,),
        mi.BoolType: (bool,),
        mi.StrType: (str,),
        mi.LiteralType: (str,),
        mi.DateTimeType: (datetime.datetime,),
        mi.ListType: (list, tuple),
    }
    return table[type(kind)]


def _union_codec(kind: mi.UnionType) -> tuple[_Decode, _Encode]:
    members = [t for t in kind.types if not isinstance(t, mi.NoneType)]
    if len(members) == 1:
        return _codec(members[0])
    structs = [t for t in members if isinstance(t, mi.StructType)]
    if len(structs) > 1:
        if len(structs) != len(members):
            raise TypeError("a union of several structs must hold nothing else")
        return _format_selected_codec([t.cls for t in structs])

    by_kind: dict[type, _Decode] = {}
    encoders: list[tuple[tuple[type, ...], _Encode]] = []
    for member in members:
        decode, encode = _codec(member)
        encoders.append((_python_types(member), encode))
        for json_type, accepted in _JSON_KINDS.items():
            if isinstance(member, accepted):
                if json_type in by_kind:
                    raise TypeError(f"ambiguous JSON union {kind!r}")
                by_kind[json_type] = decode
    # bool is tested before int when encoding (bool is an int subclass).
    encoders.sort(key=lambda entry: bool not in entry[0])
    expected = " or ".join(sorted({_kind(json_type()) for json_type in by_kind}))

    def decode_union(value: Any, ctx: _Context) -> Any:
        decode = by_kind.get(type(value))
        if decode is None:
            raise _Invalid(f"expected {expected}, got {_kind(value)}")
        return decode(value, ctx)

    def encode_union(value: Any, ctx: _Context) -> Any:
        for types, encode in encoders:
            if isinstance(value, types):
                return encode(value, ctx)
        raise _Invalid(f"unexpected value of type {type(value).__name__}")

    return decode_union, encode_union


def _format_selected_codec(variants: list[type[msgspec.Struct]]) -> tuple[_Decode, _Encode]:
    """The untagged key material union: the KeyBlock's KeyFormatType picks the variant.

    A variant named after a KeyFormatType member is used for that format; the one variant not
    named after any format (the byte-string material) is used for every other format.
    """
    named = {
        KeyFormatType[v.__name__]: v for v in variants if v.__name__ in KeyFormatType.__members__
    }
    others = [v for v in variants if v.__name__ not in KeyFormatType.__members__]
    if len(others) != 1:
        raise TypeError("exactly one key material variant must serve the non-transparent formats")
    fallback = others[0]
    for variant in variants:
        _struct_codec(variant)

    def variant_for(ctx: _Context) -> type[msgspec.Struct]:
        if ctx is None:
            raise _Invalid("key material needs the KeyFormatType of its KeyBlock")
        return named.get(ctx, fallback)

    def decode(value: Any, ctx: _Context) -> Any:
        return _struct_codec(variant_for(ctx)).decode(value, ctx)

    def encode(value: Any, ctx: _Context) -> Any:
        cls = variant_for(ctx)
        if type(value) is not cls:
            raise _Invalid(
                f"key material {type(value).__name__} does not match KeyFormatType "
                f"{getattr(ctx, 'name', ctx)} (expected {cls.__name__})"
            )
        return _struct_codec(cls).encode(value, ctx)

    return decode, encode


# ---------------------------------------------------------------------------------------------
# Vendor attribute values: {"_t": type, "_c": value}, the value's form set by the type.
# ---------------------------------------------------------------------------------------------

_VENDOR_VALUE_CODECS: Final[dict[type, tuple[_Decode, _Encode]]] = {
    str: (_check_str, _check_str),
    int: _int_codec(None, None),
    bool: (_check_bool, _check_bool),
    bytes: (_decode_bytes, _encode_buffer),
    datetime.datetime: (_decode_datetime, _encode_datetime),
}
_VENDOR_TYPES: Final[dict[str, tuple[_Decode, _Encode]]] = {
    name: _VENDOR_VALUE_CODECS[python_type]
    for name, python_type in _VENDOR_VALUE_PYTHON_TYPES.items()
}


def _decode_vendor_value(value: Any, ctx: _Context) -> VendorValue:
    if type(value) is not dict:
        raise _Invalid(f"expected a vendor attribute value object, got {_kind(value)}")
    for key in value:
        if key not in (_VENDOR_TYPE_KEY, _VENDOR_VALUE_KEY):
            raise _Invalid(f"unknown field {_name(key)} of a vendor value", _key_segment(key))
    kind = value.get(_VENDOR_TYPE_KEY)
    if type(kind) is not str or kind not in _VENDOR_TYPES:
        what = _name(kind) if type(kind) is str else _kind(kind)
        raise _Invalid(
            f"expected a vendor value type ({', '.join(_VENDOR_TYPES)}), got {what}",
            _key_segment(_VENDOR_TYPE_KEY),
        )
    if _VENDOR_VALUE_KEY not in value:
        raise _Invalid("missing required field _c of a vendor value", _key_segment("_c"))
    try:
        content = _VENDOR_TYPES[kind][0](value[_VENDOR_VALUE_KEY], ctx)
        return VendorValue(type=kind, value=content)  # type: ignore[arg-type]
    except _Invalid as exc:
        exc.segments.append(_key_segment(_VENDOR_VALUE_KEY))
        raise
    except (ValueError, TypeError) as exc:
        raise _Invalid(f"invalid {kind} vendor value: {exc}", _key_segment("_c")) from None


def _encode_vendor_value(value: Any, ctx: _Context) -> dict[str, Any]:
    if not isinstance(value, VendorValue) or value.type not in _VENDOR_TYPES:
        raise _Invalid("expected a VendorValue")
    try:
        content = _VENDOR_TYPES[value.type][1](value.value, ctx)
    except _Invalid as exc:
        exc.segments.append(_key_segment(_VENDOR_VALUE_KEY))
        raise
    return {_VENDOR_TYPE_KEY: value.type, _VENDOR_VALUE_KEY: content}


# ---------------------------------------------------------------------------------------------
# Public functions.
# ---------------------------------------------------------------------------------------------

_OBJECT_CODECS: Final[dict[str, _StructCodec]] = {
    str(cls.__struct_config__.tag): _struct_codec(cls) for cls in typing.get_args(Object)
}
_OBJECT_TAGS: Final[dict[type, str]] = {codec.cls: tag for tag, codec in _OBJECT_CODECS.items()}
_ATTRIBUTES_CODEC: Final = _struct_codec(Attributes)
_ENCODER: Final = msgspec.json.Encoder()


def _parse(data: bytes | str, what: str) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        raise MalformedKmipError(
            f"malformed {what} JSON: expected str or bytes, not a(n) {type(data).__name__}"
        )
    if len(data) > MAX_JSON_SIZE:
        raise MalformedKmipError(f"malformed {what} JSON: larger than {MAX_JSON_SIZE} bytes")
    try:
        return msgspec.json.decode(data)
    except RecursionError:
        raise MalformedKmipError(f"malformed {what} JSON: nested too deeply") from None
    except UnicodeError:
        # Not quoted: the message would show the offending byte.
        raise MalformedKmipError(f"malformed {what} JSON: not valid UTF-8 text") from None
    except (msgspec.MsgspecError, ValueError) as exc:
        raise MalformedKmipError(f"malformed {what} JSON: {type(exc).__name__}: {exc}") from None


def _fail(exc: _Invalid, what: str, verb: str = "malformed") -> MalformedKmipError:
    path = exc.path()
    return MalformedKmipError(f"{verb} {what} JSON at {path}: {exc.expected}", path)


def object_from_json(data: bytes | str) -> Object:
    """A KMIP object from Cosmian's JSON; malformed input raises ``MalformedKmipError``."""
    what = "KMIP object"
    value = _parse(data, what)
    try:
        if type(value) is not dict or len(value) != 1:
            raise _Invalid(
                "expected an object with exactly one key, the object type (e.g. SymmetricKey), "
                f"got {_kind(value) if type(value) is not dict else f'{len(value)} keys'}"
            )
        ((tag, body),) = value.items()
        codec = _OBJECT_CODECS.get(tag)
        if codec is None:
            raise _Invalid(
                f"unknown object type {_name(tag)} (expected one of {', '.join(_OBJECT_CODECS)})",
                _key_segment(tag),
            )
        try:
            return typing.cast(Object, codec.decode(body, None))
        except _Invalid as exc:
            exc.segments.append(_key_segment(tag))
            raise
    except _Invalid as exc:
        raise _fail(exc, what) from None


def object_to_json(obj: Object) -> bytes:
    """Cosmian's JSON form of a KMIP object (``{"<ObjectType>": {...}}``), as UTF-8 bytes.

    A model value JSON cannot carry (wrong type, out-of-range integer, key material that does not
    match its KeyFormatType) raises ``MalformedKmipError`` with its path.
    """
    tag = _OBJECT_TAGS.get(type(obj))
    if tag is None:
        raise MalformedKmipError(
            f"cannot write KMIP object JSON: {type(obj).__name__} is not a KMIP object"
        )
    try:
        body = _OBJECT_CODECS[tag].encode(obj, None)
    except _Invalid as exc:
        exc.segments.append(_key_segment(tag))
        raise _fail(exc, "KMIP object", "cannot write") from None
    return _write_text({tag: body}, "KMIP object")


def _write_text(body: Any, what: str) -> bytes:
    try:
        return _ENCODER.encode(body)
    except UnicodeEncodeError:
        # A lone surrogate in some str field: JSON text must be valid Unicode.
        raise MalformedKmipError(
            f"cannot write {what} JSON: a text field is not valid Unicode"
        ) from None


def attributes_from_json(data: bytes | str) -> Attributes:
    """KMIP attributes from Cosmian's JSON; malformed input raises ``MalformedKmipError``."""
    what = "KMIP attributes"
    value = _parse(data, what)
    try:
        return typing.cast(Attributes, _ATTRIBUTES_CODEC.decode(value, None))
    except _Invalid as exc:
        raise _fail(exc, what) from None


def attributes_to_json(attrs: Attributes) -> bytes:
    """Cosmian's JSON form of KMIP attributes, as UTF-8 bytes."""
    try:
        body = _ATTRIBUTES_CODEC.encode(attrs, None)
    except _Invalid as exc:
        raise _fail(exc, "KMIP attributes", "cannot write") from None
    return _write_text(body, "KMIP attributes")
