"""Strategies, settings and the hang watchdog shared by the fuzz tests and ``make fuzz``.

``KMS_FUZZ_EXAMPLES`` (or the older ``KMIP_FUZZ_EXAMPLES``) sets the examples per property
(default 60, for ``make test``); ``KMS_FUZZ_WATCHDOG`` the seconds one test may take before the
watchdog dumps every thread's stack and ends the process (default 120). Valid KMIP values are
drawn from the msgspec struct definitions themselves, so a new field is fuzzed without touching
this file.
"""

from __future__ import annotations

import collections
import datetime
import faulthandler
import functools
import os
import tempfile
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, ParamSpec, TypeVar

import msgspec
import msgspec.inspect as mi
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from kms_iface import SecretBytes
from kms_iface.errors import InterfaceError
from kms_iface.kmip import (
    Attributes,
    ByteStringKeyMaterial,
    KeyBlock,
    KeyFormatType,
    Object,
    PlainKeyValue,
    VendorValue,
)
from kms_iface.kmip import objects as kmip_objects
from kms_iface.kmip.attributes import VendorValueType

_P = ParamSpec("_P")
_R = TypeVar("_R")


def examples() -> int:
    """Examples per property: ``KMS_FUZZ_EXAMPLES`` (or ``KMIP_FUZZ_EXAMPLES``), default 60."""
    return int(os.environ.get("KMS_FUZZ_EXAMPLES", os.environ.get("KMIP_FUZZ_EXAMPLES", "60")))


FUZZ = settings(
    deadline=None,
    max_examples=examples(),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""The settings of every fuzz property (no deadline: the watchdog catches hangs instead)."""

WATCHDOG_SECONDS = float(os.environ.get("KMS_FUZZ_WATCHDOG", "120"))

COUNTS: collections.Counter[str] = collections.Counter()
"""Examples run per property in this process (read by ``tests/fuzz/run.py``)."""


def counted(test: Callable[_P, _R]) -> Callable[_P, _R]:
    """Count the examples ``test`` runs in ``COUNTS`` (put it under ``@given``)."""

    @functools.wraps(test)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        COUNTS[test.__name__] += 1
        return test(*args, **kwargs)

    return wrapper


WATCHDOG_LOG = os.environ.get(
    "KMS_FUZZ_WATCHDOG_LOG", os.path.join(tempfile.gettempdir(), "kms-iface-fuzz-watchdog.log")
)
"""Where a firing watchdog writes the test's name and every thread's stack (pytest captures fd 2,
and the watchdog ends the process before the capture is shown)."""
_log: list[typing.TextIO] = []


@contextmanager
def watchdog(name: str, seconds: float = WATCHDOG_SECONDS) -> Iterator[None]:
    """End the process, stacks in ``WATCHDOG_LOG``, if the body runs over ``seconds``.

    A hang inside a C call cannot be interrupted, so the watchdog (faulthandler's C thread, which
    needs no GIL) does not try: it reports and exits, and the run fails instead of waiting forever.
    """
    if not _log:
        _log.append(open(WATCHDOG_LOG, "w"))  # noqa: SIM115  # kept open for faulthandler
    log = _log[0]
    log.seek(0)
    log.truncate()
    log.write(f"watchdog: {name} ran over {seconds:g} s; stacks follow\n")
    log.flush()
    faulthandler.dump_traceback_later(seconds, exit=True, file=log)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _forms(secret: bytes) -> list[str]:
    """How a secret could show in a message: hex always; as text only when it could not be a
    word of the message itself (fuzzing found the plaintext b"KMSI-G" inside "no KMSI-GCM
    header"), i.e. 16 characters or more, or not printable."""
    forms = [secret.hex(), secret.hex().upper()]
    text = secret.decode("latin-1")
    if len(text) >= WORD_LENGTH or not text.isprintable():
        forms.append(repr(secret)[2:-1])
    if text.isprintable() and len(text) >= WORD_LENGTH:
        forms.append(text)
    return forms


WORD_LENGTH: Final = 16
"""Printable secrets shorter than this may be a word of a fixed message: checked as hex only."""


def assert_no_secret(exc: BaseException, *secrets: bytes | str) -> None:
    """No secret of at least 6 bytes, in any common rendering, is in ``exc``'s text or args."""
    texts = [str(exc), repr(exc), *(repr(arg) for arg in exc.args)]
    if isinstance(exc, InterfaceError):
        texts.append(exc.message)
    for secret in secrets:
        raw = secret.encode() if isinstance(secret, str) else secret
        if len(raw) < 6:
            continue
        for form in _forms(raw) + ([secret] if isinstance(secret, str) else []):
            for text in texts:
                assert form not in text, f"a secret is quoted in {type(exc).__name__}"


# ---------------------------------------------------------------------------------------------
# KMIP values derived from the struct definitions.
# ---------------------------------------------------------------------------------------------

UTC = datetime.UTC
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
    fields = field_strategies(KeyBlock)
    del fields["key_format_type"], fields["key_value"]
    return draw(
        st.builds(KeyBlock, key_format_type=st.just(fmt), key_value=st.just(value), **fields)
    )


def field_strategies(cls: type[msgspec.Struct]) -> dict[str, st.SearchStrategy[Any]]:
    """One strategy per field of ``cls``, from its declared type."""
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
            lambda: st.builds(cls, **field_strategies(cls))
        )
    return strategy


objects: st.SearchStrategy[Object] = st.one_of(
    [struct_strategy(cls) for cls in typing.get_args(Object)]
)
attributes: st.SearchStrategy[Attributes] = struct_strategy(Attributes)

# ---------------------------------------------------------------------------------------------
# Arbitrary input.
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
"""JSON values, biased towards the names KMIP documents use."""

any_text = st.text(st.characters(exclude_categories=()), max_size=64)
"""Any str, lone surrogates and control characters included."""


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, cut, inserted or dropped (always different)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"] if out else ["insert"]))
        if op == "flip":
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            out = out[: draw(st.integers(0, len(out) - 1))]
        elif op == "insert":
            i = draw(st.integers(0, len(out)))
            out[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            i = draw(st.integers(0, len(out) - 1))
            del out[i : i + draw(st.integers(1, 8))]
    if bytes(out) == data:
        out.append(0)
    return bytes(out)
