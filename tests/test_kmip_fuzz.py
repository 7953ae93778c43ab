"""Property tests of the two KMIP codecs.

Valid objects and attributes are generated from the struct definitions themselves
(``tests/fuzz/strategies.py``, so a new field is fuzzed without touching this file) and must
round-trip through JSON and MessagePack; arbitrary bytes and text, arbitrary JSON/MessagePack
values and mutations of valid documents fed to the four decoders must give a model value or
``MalformedKmipError``, never anything else.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kms_iface.errors import MalformedKmipError
from kms_iface.kmip import (
    Attributes,
    Object,
    attributes_from_json,
    attributes_from_msgpack,
    attributes_to_json,
    attributes_to_msgpack,
    object_from_json,
    object_from_msgpack,
    object_to_json,
    object_to_msgpack,
)
from tests.fuzz.strategies import (
    FUZZ,
    any_text,
    attributes,
    counted,
    json_values,
    mutated,
    objects,
    watchdog,
)


@pytest.fixture(autouse=True)
def _watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    with watchdog(request.node.nodeid):
        yield


# ---------------------------------------------------------------------------------------------
# Valid values round-trip.
# ---------------------------------------------------------------------------------------------


@FUZZ
@given(objects)
@counted
def test_objects_round_trip_through_both_codecs(obj: Object) -> None:
    json_data = object_to_json(obj)
    from_json = object_from_json(json_data)
    assert from_json == obj
    assert object_from_json(json_data.decode()) == obj
    assert object_to_json(from_json) == json_data
    msgpack_data = object_to_msgpack(obj)
    from_msgpack = object_from_msgpack(msgpack_data)
    assert from_msgpack == obj
    assert object_to_json(from_msgpack) == json_data
    assert object_to_msgpack(from_json) == msgpack_data


@FUZZ
@given(attributes)
@counted
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


def _decode_all(json_data: bytes | str, msgpack_data: bytes) -> None:
    decoders: tuple[tuple[typing.Callable[[Any], object], bytes | str], ...] = (
        (object_from_json, json_data),
        (attributes_from_json, json_data),
        (object_from_msgpack, msgpack_data),
        (attributes_from_msgpack, msgpack_data),
    )
    for decode, data in decoders:
        try:
            result = decode(data)
        except MalformedKmipError as exc:
            assert exc.path.startswith("$")
        else:
            assert isinstance(result, (Attributes, *typing.get_args(Object)))


@FUZZ
@given(st.binary(max_size=200))
@counted
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_all(data, data)


@FUZZ
@given(any_text)
@counted
def test_arbitrary_text(data: str) -> None:
    """``str`` input (lone surrogates included) to the JSON decoders."""
    _decode_all(data, data.encode("utf-8", "surrogatepass"))


@FUZZ
@given(json_values)
@counted
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


def _check_accepted(decoded: Object | Attributes) -> None:
    """Whatever a decoder accepts is written back in a form that reads back the same."""
    if isinstance(decoded, Attributes):
        assert attributes_from_json(attributes_to_json(decoded)) == decoded
        assert attributes_from_msgpack(attributes_to_msgpack(decoded)) == decoded
    else:
        assert object_from_json(object_to_json(decoded)) == decoded
        assert object_from_msgpack(object_to_msgpack(decoded)) == decoded


@FUZZ
@given(objects, st.data())
@counted
def test_mutated_documents(obj: Object, data: st.DataObject) -> None:
    document = msgspec.json.decode(object_to_json(obj))
    path = data.draw(st.sampled_from(_paths(document)))
    mutated_document = _replace(document, path, data.draw(json_values))
    try:
        decoded = object_from_json(msgspec.json.encode(mutated_document))
    except MalformedKmipError as exc:
        assert exc.path.startswith("$")
    else:
        _check_accepted(decoded)


@FUZZ
@given(attributes, st.data())
@counted
def test_mutated_attribute_documents(attrs: Attributes, data: st.DataObject) -> None:
    document = msgspec.json.decode(attributes_to_json(attrs))
    path = data.draw(st.sampled_from(_paths(document)))
    mutated_document = _replace(document, path, data.draw(json_values))
    try:
        decoded = attributes_from_json(msgspec.json.encode(mutated_document))
    except MalformedKmipError as exc:
        assert exc.path.startswith("$")
    else:
        _check_accepted(decoded)


@FUZZ
@given(objects, st.data())
@counted
def test_mutated_encodings(obj: Object, data: st.DataObject) -> None:
    """Valid JSON and MessagePack with bytes flipped, cut, inserted or dropped."""
    for encode, decode in (
        (object_to_json, object_from_json),
        (object_to_msgpack, object_from_msgpack),
    ):
        damaged = data.draw(mutated(encode(obj)))
        try:
            decoded = decode(damaged)
        except MalformedKmipError as exc:
            assert exc.path.startswith("$")
        else:
            _check_accepted(decoded)
