"""Codec benchmark: kms_iface's KMIP codecs against PyKMIP's TTLV, on the same AES-256 key.

The object is the store benchmark's: an AES-256 SymmetricKey built with ``symmetric_key_object``,
with a Name, an ObjectGroup, its UniqueIdentifier, three tags and a Description padded to about
1 KiB of MessagePack. Codecs:

- ``kms_iface msgpack``: ``object_to_msgpack`` / ``object_from_msgpack`` (the storage format);
- ``kms_iface JSON``: ``object_to_json`` / ``object_from_json`` (Cosmian's JSON shape), when
  ``kms_iface.kmip.json`` exists;
- ``PyKMIP TTLV``: PyKMIP 0.11's ``kmip.core.secrets.SymmetricKey`` with a ``KeyBlock``, written
  into a ``BytearrayStream`` and read back (KMIP 1.0 encoding). It carries the same information as
  closely as PyKMIP's KMIP 1.x model allows: key format Raw (PyKMIP keeps TransparentSymmetricKey
  key material as opaque bytes it never parses, so Raw is the form it fully decodes), the
  algorithm and length in the key block, and as KeyValue attributes Unique Identifier, Name,
  Object Type, Cryptographic Algorithm, Cryptographic Length, Cryptographic Usage Mask (the same
  2108), Object Group, plus the Description and the tags as custom attributes ``x-description``
  and ``x-cosmian-tag`` (KMIP 1.x has no Description nor vendor attribute structure). No Key
  Format Type attribute: KMIP 1.x has none.

Rows: encode, decode, round trip (encode then decode). As in `kms-iface bench`, each round runs one
timed burst per codec, the order rotating by one each round; ops/s is the median burst and the
ratio the median of per-round ratios to PyKMIP.

    python benches/codec_bench.py [--quick] [--rounds 25] [--duration 0.1]

PyKMIP 0.11 imports and runs on Python 3.11 as it is (no shim needed). It has one quirk: a
TextString whose length is a multiple of 8 is re-written with 8 extra padding bytes after a read,
so the check below compares decoded values, not re-encoded bytes.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, cast

import msgspec
from kmip.core import enums as kmip_enums  # type: ignore[import-untyped]
from kmip.core import misc as kmip_misc
from kmip.core import objects as kmip_objects
from kmip.core import secrets as kmip_secrets
from kmip.core.attributes import (  # type: ignore[import-untyped]
    CryptographicAlgorithm as KmipCryptographicAlgorithm,
)
from kmip.core.attributes import CryptographicLength as KmipCryptographicLength
from kmip.core.factories.attributes import AttributeFactory  # type: ignore[import-untyped]
from kmip.core.utils import BytearrayStream  # type: ignore[import-untyped]

from kms_iface.kmip.attributes import Attributes, Name
from kms_iface.kmip.msgpack import object_from_msgpack, object_to_msgpack
from kms_iface.kmip.objects import Object, SymmetricKey, symmetric_key_object

TARGET_OBJECT_BYTES: Final = 1024
VENDOR: Final = "cosmian"
UID: Final = "6f1c2a0e-51b5-4c0e-9a53-0b7f4b1f9d21"
NAME: Final = "bench-key-0000000"
GROUP: Final = "og-000000"
TAGS: Final = ("bench", "grp-000000")
PADDING_TEXT: Final = "padding to reach about one KiB of MessagePack per object; "
MSGPACK: Final = "kms_iface msgpack"
JSON: Final = "kms_iface JSON"
TTLV: Final = "PyKMIP TTLV"

Op = Callable[[], object]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the object, three ways -----------------------------------------------------------------------


def build_object(key: bytes, description: str | None) -> SymmetricKey:
    attributes = Attributes(
        name=[Name(name_value=NAME)],
        object_group=GROUP,
        unique_identifier=UID,
        description=description,
    )
    return symmetric_key_object(key, attributes, VENDOR, tags=TAGS)


def padded_object(key: bytes) -> SymmetricKey:
    """The object with a Description that brings its MessagePack to ~TARGET_OBJECT_BYTES."""
    length = TARGET_OBJECT_BYTES - len(object_to_msgpack(build_object(key, None))) - 14
    for _ in range(3):
        size = len(object_to_msgpack(build_object(key, (PADDING_TEXT * 40)[:length])))
        if size == TARGET_OBJECT_BYTES:
            break
        length += TARGET_OBJECT_BYTES - size
    return build_object(key, (PADDING_TEXT * 40)[:length])


@dataclass(frozen=True)
class JsonCodec:
    to_json: Callable[[Object], bytes]
    from_json: Callable[[bytes], Object]


def kms_iface_json() -> JsonCodec | None:
    """kms_iface.kmip.json's object codec, if the module is there."""
    try:
        module = importlib.import_module("kms_iface.kmip.json")
    except ImportError:
        return None
    to_json = getattr(module, "object_to_json", None)
    from_json = getattr(module, "object_from_json", None)
    if not callable(to_json) or not callable(from_json):
        return None
    return JsonCodec(
        cast(Callable[[Object], bytes], to_json), cast(Callable[[bytes], Object], from_json)
    )


def pykmip_object(obj: SymmetricKey) -> Any:
    """PyKMIP's closest equivalent of ``obj`` (see the module docstring)."""
    embedded = obj.attributes()
    assert embedded is not None and embedded.cryptographic_usage_mask is not None
    key = bytes(cast(Any, obj.key_block().key_material()).key)
    factory = AttributeFactory()
    kinds = kmip_enums.AttributeType
    masks = [
        flag
        for flag in kmip_enums.CryptographicUsageMask
        if embedded.cryptographic_usage_mask & flag.value
    ]
    attributes = [
        factory.create_attribute(kinds.UNIQUE_IDENTIFIER, embedded.unique_identifier),
        factory.create_attribute(kinds.NAME, NAME),
        factory.create_attribute(kinds.OBJECT_TYPE, kmip_enums.ObjectType.SYMMETRIC_KEY),
        factory.create_attribute(
            kinds.CRYPTOGRAPHIC_ALGORITHM, kmip_enums.CryptographicAlgorithm.AES
        ),
        factory.create_attribute(kinds.CRYPTOGRAPHIC_LENGTH, 256),
        factory.create_attribute(kinds.CRYPTOGRAPHIC_USAGE_MASK, masks),
        factory.create_attribute(kinds.OBJECT_GROUP, GROUP),
        factory.create_attribute("x-description", embedded.description),
        factory.create_attribute(
            "x-cosmian-tag", msgspec.json.encode(sorted(embedded.get_tags(VENDOR))).decode()
        ),
    ]
    block = kmip_objects.KeyBlock(
        key_format_type=kmip_misc.KeyFormatType(kmip_enums.KeyFormatType.RAW),
        key_value=kmip_objects.KeyValue(kmip_objects.KeyMaterial(key), attributes),
        cryptographic_algorithm=KmipCryptographicAlgorithm(kmip_enums.CryptographicAlgorithm.AES),
        cryptographic_length=KmipCryptographicLength(256),
    )
    return kmip_secrets.SymmetricKey(block)


def ttlv_encode(key: Any) -> bytes:
    stream = BytearrayStream()
    key.write(stream)
    return bytes(stream.buffer)


def ttlv_decode(data: bytes) -> Any:
    key = kmip_secrets.SymmetricKey()
    key.read(BytearrayStream(data))
    return key


def _ttlv_values(key: Any) -> dict[str, object]:
    values: dict[str, object] = {
        "key": bytes(key.key_block.key_value.key_material.value),
        "algorithm": key.key_block.cryptographic_algorithm.value,
        "length": key.key_block.cryptographic_length.value,
    }
    for attribute in key.key_block.key_value.attributes:
        value = attribute.attribute_value
        if attribute.attribute_name.value == "Name":
            values["Name"] = value.name_value.value
        else:
            values[attribute.attribute_name.value] = value.value
    return values


def check(obj: SymmetricKey, json_codec: JsonCodec | None, ttlv_key: Any) -> None:
    """Every codec gives back what it was given (not timed)."""
    if object_from_msgpack(object_to_msgpack(obj)) != obj:
        raise SystemExit("codec_bench.py: the MessagePack round trip changed the object")
    if json_codec is not None and json_codec.from_json(json_codec.to_json(obj)) != obj:
        raise SystemExit("codec_bench.py: the JSON round trip changed the object")
    if _ttlv_values(ttlv_decode(ttlv_encode(ttlv_key))) != _ttlv_values(ttlv_key):
        raise SystemExit("codec_bench.py: the PyKMIP TTLV round trip changed the key")


# -- measuring ------------------------------------------------------------------------------------


def burst(op: Op, duration: float) -> float:
    """Calls per second of ``op`` over one burst of ``duration`` seconds (at least one call)."""
    clock = time.perf_counter
    began = clock()
    deadline = began + duration
    calls = 0
    while True:
        op()
        calls += 1
        if clock() >= deadline:
            break
    return calls / (clock() - began)


def measure(
    rows: dict[str, dict[str, Op]], rounds: int, duration: float
) -> dict[tuple[str, str], list[float]]:
    rates: dict[tuple[str, str], list[float]] = {}
    for row, ops in rows.items():
        codecs = list(ops)
        for op in ops.values():
            op()
            op()
        for round_index in range(rounds):
            shift = round_index % len(codecs)
            for codec in codecs[shift:] + codecs[:shift]:
                rates.setdefault((row, codec), []).append(burst(ops[codec], duration))
        summary = ", ".join(
            f"{codec} {statistics.median(rates[row, codec]):,.0f}/s" for codec in codecs
        )
        log(f"[{row}] {summary}")
    return rates


def ratio(rates: dict[tuple[str, str], list[float]], row: str, codec: str) -> str:
    mine, theirs = rates.get((row, codec)), rates.get((row, TTLV))
    if not mine or not theirs:
        return "n/a"
    return f"{statistics.median(a / b for a, b in zip(mine, theirs, strict=True)):.1f}x"


def median(rates: dict[tuple[str, str], list[float]], row: str, codec: str) -> str:
    values = rates.get((row, codec))
    return f"{statistics.median(values):,.0f}" if values else "n/a"


def dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description="kms_iface KMIP codecs against PyKMIP's TTLV.")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 rounds of 0.05 s")
    parser.add_argument("--rounds", type=int, help="bursts per row and codec (25)")
    parser.add_argument("--duration", type=float, help="seconds per burst (0.1)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 25)
    duration = args.duration or (0.05 if args.quick else 0.1)

    obj = padded_object(random.Random(1).randbytes(32))
    json_codec = kms_iface_json()
    ttlv_key = pykmip_object(obj)
    check(obj, json_codec, ttlv_key)
    packed = object_to_msgpack(obj)
    ttlv = ttlv_encode(ttlv_key)
    encoded: dict[str, bytes] = {MSGPACK: packed, TTLV: ttlv}

    encode_ops: dict[str, Op] = {MSGPACK: lambda: object_to_msgpack(obj)}
    decode_ops: dict[str, Op] = {MSGPACK: lambda: object_from_msgpack(packed)}
    trip_ops: dict[str, Op] = {MSGPACK: lambda: object_from_msgpack(object_to_msgpack(obj))}
    if json_codec is not None:
        to_json, from_json = json_codec.to_json, json_codec.from_json
        text = to_json(obj)
        encoded[JSON] = text
        encode_ops[JSON] = lambda: to_json(obj)
        decode_ops[JSON] = lambda: from_json(text)
        trip_ops[JSON] = lambda: from_json(to_json(obj))
    encode_ops[TTLV] = lambda: ttlv_encode(ttlv_key)
    decode_ops[TTLV] = lambda: ttlv_decode(ttlv)
    trip_ops[TTLV] = lambda: ttlv_decode(ttlv_encode(ttlv_key))
    rows = {"encode": encode_ops, "decode": decode_ops, "round trip": trip_ops}
    rates = measure(rows, rounds, duration)

    embedded = obj.attributes()
    assert embedded is not None
    count = sum(getattr(embedded, name) is not None for name in embedded.__struct_fields__)
    codecs = [MSGPACK, *([JSON] if json_codec is not None else []), TTLV]
    sizes = ", ".join(f"{codec} {len(encoded[codec]):,} B" for codec in codecs)
    print(
        f"AES-256 SymmetricKey with {count} embedded attributes; encoded sizes: {sizes}.\n"
        f"Ops/s: median of {rounds} interleaved bursts of {duration} s; ratio = median over the "
        f"rounds of (burst / PyKMIP's burst of the same round).\n"
        f"Python {platform.python_version()}, msgspec {msgspec.__version__}, PyKMIP "
        f"{dist_version('PyKMIP')}"
        + ("" if json_codec is not None else "; kms_iface.kmip.json not available")
        + ".\n"
    )
    header = ["op", *(f"{codec} ops/s" for codec in codecs)]
    header += [f"{codec} / {TTLV}" for codec in codecs if codec != TTLV]
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * (len(header) - 1))
    for row in rows:
        cells = [row, *(median(rates, row, codec) for codec in codecs)]
        cells += [ratio(rates, row, codec) for codec in codecs if codec != TTLV]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
