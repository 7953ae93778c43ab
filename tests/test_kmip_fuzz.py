"""Property tests of the two KMIP codecs.

Valid objects and attributes are generated from the struct definitions themselves (so a new field
is fuzzed without touching this file) and must round-trip through JSON and MessagePack; arbitrary
bytes, arbitrary JSON/MessagePack values and mutations of valid documents fed to the four decoders
must give a model value or ``MalformedKmipError``, never anything else.
"""

from __future__ import annotations

import datetime
import os
import typing
from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms_iface import SecretBytes
from kms_iface.errors import MalformedKmipError
from kms_iface.kmip import (
    Attributes,
    ByteStringKeyMaterial,
    KeyBlock,
    KeyFormatType,
    Object,
    PlainKeyValue,
    VendorValue,
    attributes_from_json,
    attributes_from_msgpack,
    attributes_to_json,
    attributes_to_msgpack,
    object_from_json,
    object_from_msgpack,
    object_to_json,
    object_to_msgpack,
)
from kms_iface.kmip import objects as kmip_objects
from kms_iface.kmip.attributes import VendorValueType

# KMIP_FUZZ_EXAMPLES raises the example count for a longer bug hunt (default: fast CI runs).
FUZZ = settings(
    deadline=None,
    max_examples=int(os.environ.get("KMIP_FUZZ_EXAMPLES", "60")),
    suppress_health_check=[HealthCheck.too_slow],
)

UTC = datetime.UTC

# ---------------------------------------------------------------------------------------------
# Strategies derived from the struct definitions.
# ---------------------------------------------------------------------------------------------

small_bytes = st.binary(max_size=48)
aware_datetimes = st.datetimes(
    min_value=datetime.datetime(2, 1, 1),
    max_value=datetime.datetime(9998, 12, 31),
    timezones=st.sampled_from(
        [
            UTC,
            datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
            datetime.timezone(-datetime.timedelta(hours=8)),
        ]
    ),
)
text = st.text(max_size=24)

_VENDOR_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "TextString": text,
    "Integer": st.integers(-(2**31), 2**31 - 1),
    "LongInteger": st.integers(-(2**63), 2**63 - 1),
    "BigInteger": small_bytes,
    "ByteString": small_bytes,
    "Boolean": st.booleans(),
    "DateTime": aware_datetimes,
    "Interval": st.integers(0, 2**32 - 1),
    "DateTimeExtended": st.integers(-(2**63), 2**63 - 1),
}
assert set(_VENDOR_VALUES) == set(typing.get_args(VendorValueType))


def _vendor_value(kind: VendorValueType) -> st.SearchStrategy[VendorValue]:
    return _VENDOR_VALUES[kind].map(lambda value: VendorValue(type=kind, value=value))


vendor_values = st.one_of([_vendor_value(kind) for kind in typing.get_args(VendorValueType)])


def strategy_for(kind: mi.Type) -> st.SearchStrategy[Any]:
    """A strategy of valid model values of a msgspec type description."""
    if isinstance(kind, mi.StructType):
        return struct_strategy(kind.cls)
    if isinstance(kind, mi.IntType):
        return st.integers(
            -(2**63) if kind.ge is None else kind.ge, 2**63 - 1 if kind.le is None else kind.le
        )
    if isinstance(kind, mi.BoolType):
        return st.booleans()
    if isinstance(kind, mi.StrType):
        return text
    if isinstance(kind, mi.BytesType):
        return small_bytes
    if isinstance(kind, mi.CustomType) and kind.cls is SecretBytes:
        return small_bytes.map(SecretBytes)
    if isinstance(kind, mi.EnumType):
        return st.sampled_from(list(kind.cls))
    if isinstance(kind, mi.LiteralType):
        return st.sampled_from(list(kind.values))
    if isinstance(kind, mi.DateTimeType):
        return aware_datetimes
    if isinstance(kind, mi.ListType):
        return st.lists(strategy_for(kind.item_type), max_size=3)
    if isinstance(kind, mi.UnionType):
        return st.one_of([strategy_for(t) for t in kind.types])
    if isinstance(kind, mi.NoneType):
        return st.none()
    raise TypeError(f"no strategy for {kind!r}")


_MATERIALS = list(typing.get_args(kmip_objects.KeyMaterial))
_OPAQUE_FORMATS = [f for f in KeyFormatType if not f.name.startswith("Transparent")]


@st.composite
def key_blocks(draw: st.DrawFn) -> KeyBlock:
    """A key block whose key material variant matches its KeyFormatType (as JSON requires)."""
    material_cls = draw(st.sampled_from(_MATERIALS))
    if material_cls is ByteStringKeyMaterial:
        fmt = draw(st.sampled_from(_OPAQUE_FORMATS))
    else:
        fmt = KeyFormatType[material_cls.__name__]
    value = draw(
        st.one_of(
            st.none(),
            small_bytes,
            st.builds(
                PlainKeyValue,
                key_material=struct_strategy(material_cls),
                attributes=st.none() | struct_strategy(Attributes),
            ),
        )
    )
    fields = _field_strategies(KeyBlock)
    del fields["key_format_type"], fields["key_value"]
    return draw(
        st.builds(KeyBlock, key_format_type=st.just(fmt), key_value=st.just(value), **fields)
    )


def _field_strategies(cls: type[msgspec.Struct]) -> dict[str, st.SearchStrategy[Any]]:
    infos = msgspec.structs.fields(cls)
    kinds = mi.multi_type_info([info.type for info in infos])
    return {info.name: strategy_for(kind) for info, kind in zip(infos, kinds, strict=True)}


_STRUCT_STRATEGIES: dict[type, st.SearchStrategy[Any]] = {}


def struct_strategy(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    """Valid instances of a struct, every field drawn from its declared type."""
    if cls is VendorValue:
        return vendor_values
    if cls is KeyBlock:
        return key_blocks()
    strategy = _STRUCT_STRATEGIES.get(cls)
    if strategy is None:
        strategy = _STRUCT_STRATEGIES[cls] = st.deferred(
            lambda: st.builds(cls, **_field_strategies(cls))
        )
    return strategy


objects: st.SearchStrategy[Object] = st.one_of(
    [struct_strategy(cls) for cls in typing.get_args(Object)]
)
attributes: st.SearchStrategy[Attributes] = struct_strategy(Attributes)


# ---------------------------------------------------------------------------------------------
# Valid values round-trip.
# ---------------------------------------------------------------------------------------------


@FUZZ
@given(objects)
def test_objects_round_trip_through_both_codecs(obj: Object) -> None:
    json_data = object_to_json(obj)
    from_json = object_from_json(json_data)
    assert from_json == obj
    assert object_to_json(from_json) == json_data
    msgpack_data = object_to_msgpack(obj)
    from_msgpack = object_from_msgpack(msgpack_data)
    assert from_msgpack == obj
    assert object_to_json(from_msgpack) == json_data
    assert object_to_msgpack(from_json) == msgpack_data


@FUZZ
@given(attributes)
def test_attributes_round_trip_through_both_codecs(attrs: Attributes) -> None:
    json_data = attributes_to_json(attrs)
    assert attributes_from_json(json_data) == attrs
    assert attributes_from_json(json_data.decode()) == attrs
    msgpack_data = attributes_to_msgpack(attrs)
    from_msgpack = attributes_from_msgpack(msgpack_data)
    assert from_msgpack == attrs
    assert attributes_to_json(from_msgpack) == json_data


# ---------------------------------------------------------------------------------------------
# Arbitrary input: a model value or MalformedKmipError, nothing else.
# ---------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["SymmetricKey", "KeyBlock", "Raw", "AES", "TextString", "_t", "_c"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "SymmetricKey",
                    "KeyBlock",
                    "KeyFormatType",
                    "KeyValue",
                    "KeyMaterial",
                    "Key",
                    "Attributes",
                    "Attribute",
                    "_t",
                    "_c",
                    "Link",
                    "State",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


def _decode_all(json_data: bytes, msgpack_data: bytes) -> None:
    for decode, data in (
        (object_from_json, json_data),
        (attributes_from_json, json_data),
        (object_from_msgpack, msgpack_data),
        (attributes_from_msgpack, msgpack_data),
    ):
        try:
            result = decode(data)
        except MalformedKmipError as exc:
            assert exc.path.startswith("$")
        else:
            assert isinstance(result, (Attributes, *typing.get_args(Object)))


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_all(data, data)


@FUZZ
@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    try:
        msgpack_data = msgspec.msgpack.encode(value)
    except OverflowError:  # integers beyond 64 bits exist in JSON only
        msgpack_data = msgspec.json.encode(value)
    _decode_all(msgspec.json.encode(value), msgpack_data)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location inside a decoded JSON document."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):
            found += _paths(item, (*prefix, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(value[head], rest, new)
    return copy


@FUZZ
@given(objects, st.data())
def test_mutated_documents(obj: Object, data: st.DataObject) -> None:
    document = msgspec.json.decode(object_to_json(obj))
    path = data.draw(st.sampled_from(_paths(document)))
    mutated = _replace(document, path, data.draw(json_values))
    text = msgspec.json.encode(mutated)
    try:
        decoded = object_from_json(text)
    except MalformedKmipError as exc:
        assert exc.path.startswith("$")
    else:
        # Whatever is accepted is written back in a form that reads back the same.
        assert object_from_json(object_to_json(decoded)) == decoded
        assert object_from_msgpack(object_to_msgpack(decoded)) == decoded
