"""``copy_store``: every object and grant of one store, into another, then verified.

The source must be ``Dumpable``; the target is any ObjectsStore + PermissionsStore (a
``CopyTarget``): objects are written with ``atomic(owner, [Upsert, ...])``, one call per owner and
batch, grants with ``grant_operations``, several calls at a time so that stores with group commit
or a connection pool work in parallel. Nothing is written into a target that already holds
something unless ``allow_non_empty=True``.

Verification reads the source again. When the target is ``Dumpable`` too, both dumps are walked
side by side: the same uids, the same grants, and for each object the same keyed digest of a
canonical encoding (uid, owner, state, object, attributes, tags). A target that cannot list its
content is verified by lookups instead: every source object and grant is read back through the
contracts, which cannot see extra content in the target. Any difference raises ``DbError``
naming the first differing uid (never key material), and so does a dump that breaks the
``Dumpable`` order (uids in code point order, i.e. UTF-8 byte order: PostgreSQL's ``"C"``
collation), each page being checked before it is compared.

Key material stays in the objects' ``SecretBytes`` (wiped when freed: a batch is dropped once
written or digested, and the objects are never zeroized here, as a store may still hold them);
the encodings made for a digest are wiped, and the digests are keyed with a random per-run key.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Literal, Protocol, TypeAlias, TypeVar

import anyio
import msgspec

from kms_iface.errors import DbError, InterfaceError, InvalidRequestError
from kms_iface.kmip.enums import KmipOperation
from kms_iface.secrets import SecretBytes, wipe
from kms_iface.stores.base import (
    AtomicOperation,
    Dumpable,
    Grant,
    ObjectWithMetadata,
    StoredObject,
    Upsert,
)

__all__ = [
    "CopyProgress",
    "CopyReport",
    "CopyStage",
    "CopyTarget",
    "TargetNotEmptyError",
    "copy_store",
]

T = TypeVar("T")

WRITERS: Final = 16
"""Writes in flight at once (atomic batches of different owners, grants)."""

CopyStage: TypeAlias = Literal["objects", "grants", "verify objects", "verify grants"]
CopyProgress: TypeAlias = Callable[[CopyStage, int], None]
"""Called with a stage and how many more items it has gone through."""


class CopyTarget(Protocol):
    """What ``copy_store`` needs of a target: any ObjectsStore + PermissionsStore has it."""

    async def atomic(self, user: str, operations: Sequence[AtomicOperation]) -> list[str]: ...

    async def grant_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None: ...

    async def retrieve(self, uid: str) -> ObjectWithMetadata | None: ...

    async def retrieve_tags(self, uid: str) -> set[str]: ...

    async def list_user_operations_on_object(
        self, uid: str, user: str, no_inherited_access: bool
    ) -> set[KmipOperation]: ...


class CopyReport(msgspec.Struct, frozen=True):
    """What was copied and how it was verified.

    ``verification``: ``"dump"`` when the target's whole content was compared with the source's,
    ``"lookup"`` when every source item was read back from a target that cannot list its content.
    """

    objects: int
    grants: int
    verification: Literal["dump", "lookup"]


class TargetNotEmptyError(InvalidRequestError):
    """The target already holds objects or grants (or cannot tell), and merging was not allowed."""


async def copy_store(
    source: Dumpable,
    target: CopyTarget,
    *,
    allow_non_empty: bool = False,
    batch: int = 1000,
    progress: CopyProgress | None = None,
) -> CopyReport:
    """Copy every object (Destroyed ones too) and every grant of ``source`` into ``target``.

    Both stores must be open. Raises ``TargetNotEmptyError`` before writing anything when the
    target is not known to be empty and ``allow_non_empty`` is false, and ``DbError`` when the
    target does not match the source afterwards; write errors propagate as the target raised them.
    With ``allow_non_empty``, content the target had before is left alone and not compared (a
    grant it already had is merged with the copied one, and then differs from the source's).
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise InvalidRequestError("batch must be an int of at least 1")
    report = progress or _ignore
    dumpable = target if isinstance(target, Dumpable) else None
    if not allow_non_empty:
        await _check_empty(dumpable)
    objects = 0
    async with _closing(source.dump_objects(batch)) as object_pages:
        async for page in object_pages:
            await _write_objects(target, page)
            objects += len(page)
            report("objects", len(page))
    grants = 0
    async with _closing(source.dump_grants(batch)) as grant_pages:
        async for grant_page in grant_pages:
            await _bounded(
                functools.partial(target.grant_operations, g.uid, g.user, g.operations)
                for g in grant_page
            )
            grants += len(grant_page)
            report("grants", len(grant_page))
    if dumpable is None:
        checked = await _verify_by_lookup(source, target, batch, report)
    else:
        checked = await _verify_by_dump(source, dumpable, batch, allow_non_empty, report)
    if checked != (objects, grants):
        raise DbError(
            f"the source changed during the copy: {objects} objects and {grants} grants were "
            f"copied, it now holds {checked[0]} and {checked[1]}"
        )
    return CopyReport(objects, grants, "lookup" if dumpable is None else "dump")


def _ignore(stage: CopyStage, count: int) -> None:
    del stage, count


@contextlib.asynccontextmanager
async def _closing(iterator: AsyncIterator[T]) -> AsyncGenerator[AsyncIterator[T], None]:
    """``iterator``, closed on exit when it can be (a store's dump may hold a transaction)."""
    try:
        yield iterator
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


async def _check_empty(target: Dumpable | None) -> None:
    if target is None:
        raise TargetNotEmptyError(
            "the target store cannot list its content, so it cannot be checked for being empty: "
            "allow a non-empty target to copy into it"
        )
    for dump in (target.dump_objects, target.dump_grants):
        async with _closing(dump(1)) as pages:
            async for _ in pages:
                raise TargetNotEmptyError(
                    "the target store is not empty: refusing to merge the copy into its content"
                )


async def _write_objects(target: CopyTarget, page: list[StoredObject]) -> None:
    """One ``atomic`` per owner of the page."""
    by_owner: defaultdict[str, list[AtomicOperation]] = defaultdict(list)
    for item in page:
        by_owner[item.owner].append(
            Upsert(item.uid, item.object, item.attributes, item.tags, item.state)
        )
    await _bounded(
        functools.partial(target.atomic, owner, operations)
        for owner, operations in by_owner.items()
    )


async def _bounded(calls: Iterable[Callable[[], Awaitable[object]]]) -> None:
    """Run the calls, ``WRITERS`` at a time; after an ``InterfaceError`` none is started, those
    running finish, and the first error is raised."""
    limiter = anyio.Semaphore(WRITERS)
    failures: list[InterfaceError] = []

    async def run(call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except InterfaceError as exc:
            failures.append(exc)
        finally:
            limiter.release()

    async with anyio.create_task_group() as group:
        for call in calls:
            await limiter.acquire()
            if failures:
                limiter.release()
                break
            group.start_soon(run, call)
    if failures:
        raise failures[0]


# -- verification ------------------------------------------------------------------------------

_Key: TypeAlias = tuple[str, ...]
"""``(uid,)`` for an object, ``(uid, user)`` for a grant: dump order is the order of these."""
_Row: TypeAlias = tuple[_Key, object]
"""A key and what is compared under it: an object's digest, a grant's operations."""


def _secret_view(value: Any) -> Any:
    if isinstance(value, SecretBytes):
        return memoryview(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_CANONICAL: Final = msgspec.msgpack.Encoder(enc_hook=_secret_view, order="deterministic")


def _digest(item: StoredObject, key: bytes) -> bytes:
    """A keyed BLAKE2b of the object's canonical MessagePack (sets and maps sorted)."""
    buffer = bytearray()
    try:
        _CANONICAL.encode_into(item, buffer)
        return hashlib.blake2b(buffer, key=key, digest_size=32).digest()
    finally:
        wipe(buffer)


def _describe(key: _Key) -> str:
    if len(key) == 1:
        return f"object {key[0]!r}"
    return f"the grant of {key[1]!r} on {key[0]!r}"


def _mismatch(what: str) -> DbError:
    return DbError(f"the copy does not match the source: {what}")


async def _object_pages(
    dump: AsyncIterator[list[StoredObject]], key: bytes, on_page: Callable[[int], None]
) -> AsyncIterator[list[_Row]]:
    async with _closing(dump) as pages:
        async for page in pages:
            yield [((item.uid,), _digest(item, key)) for item in page]
            on_page(len(page))


async def _grant_pages(
    dump: AsyncIterator[list[Grant]], on_page: Callable[[int], None]
) -> AsyncIterator[list[_Row]]:
    async with _closing(dump) as pages:
        async for page in pages:
            yield [((grant.uid, grant.user), grant.operations) for grant in page]
            on_page(len(page))


async def _ordered(pages: AsyncIterator[list[_Row]], side: str) -> AsyncIterator[_Row]:
    """The rows of ``pages``, each page checked to be in strictly increasing key order (uids in
    code point order, the ``Dumpable`` order) before any of its rows is compared."""
    previous: _Key = ()
    async with _closing(pages) as checked:
        async for page in checked:
            for key, _ in page:
                if key <= previous:
                    raise DbError(
                        f"the {side} store does not list its content in code point order "
                        f"({_describe(key)} comes after {_describe(previous)}): it breaks the "
                        "Dumpable contract"
                    )
                previous = key
            for row in page:
                yield row


async def _compare(
    source: AsyncIterator[list[_Row]], target: AsyncIterator[list[_Row]], extra: bool
) -> int:
    """How many source rows the target has, equal; the first difference raises ``DbError``.

    ``extra``: rows only the target has are skipped instead of being a difference.
    """
    count = 0
    async with (
        _closing(_ordered(source, "source")) as left_rows,
        _closing(_ordered(target, "target")) as right_rows,
    ):
        left = await anext(left_rows, None)
        right = await anext(right_rows, None)
        while left is not None or right is not None:
            if right is None or (left is not None and left[0] < right[0]):
                assert left is not None
                raise _mismatch(f"{_describe(left[0])} is missing from the target")
            if left is None or right[0] < left[0]:
                if not extra:
                    raise _mismatch(f"the target has {_describe(right[0])}, the source has not")
                right = await anext(right_rows, None)
                continue
            if left[1] != right[1]:
                raise _mismatch(f"{_describe(left[0])} differs in the target")
            count += 1
            left = await anext(left_rows, None)
            right = await anext(right_rows, None)
    return count


async def _verify_by_dump(
    source: Dumpable, target: Dumpable, batch: int, extra: bool, report: CopyProgress
) -> tuple[int, int]:
    key = os.urandom(32)  # digests are of key material: keyed, and the key dies with the run
    objects = await _compare(
        _object_pages(source.dump_objects(batch), key, lambda n: report("verify objects", n)),
        _object_pages(target.dump_objects(batch), key, _skip),
        extra,
    )
    grants = await _compare(
        _grant_pages(source.dump_grants(batch), lambda n: report("verify grants", n)),
        _grant_pages(target.dump_grants(batch), _skip),
        extra,
    )
    return objects, grants


def _skip(count: int) -> None:
    del count


async def _verify_by_lookup(
    source: Dumpable, target: CopyTarget, batch: int, report: CopyProgress
) -> tuple[int, int]:
    key = os.urandom(32)
    objects = 0
    async with _closing(source.dump_objects(batch)) as object_pages:
        async for page in object_pages:
            for item in page:
                await _check_object(target, item, key)
            objects += len(page)
            report("verify objects", len(page))
    grants = 0
    async with _closing(source.dump_grants(batch)) as grant_pages:
        async for grant_page in grant_pages:
            for grant in grant_page:
                found = await target.list_user_operations_on_object(grant.uid, grant.user, True)
                if found != grant.operations:
                    raise _mismatch(f"{_describe((grant.uid, grant.user))} differs in the target")
            grants += len(grant_page)
            report("verify grants", len(grant_page))
    return objects, grants


async def _check_object(target: CopyTarget, item: StoredObject, key: bytes) -> None:
    found = await target.retrieve(item.uid)
    if found is None:
        raise _mismatch(f"{_describe((item.uid,))} is missing from the target")
    tags = frozenset(await target.retrieve_tags(item.uid))
    copy = StoredObject(found.id, found.owner, found.state, found.object, found.attributes, tags)
    if _digest(copy, key) != _digest(item, key):
        raise _mismatch(f"{_describe((item.uid,))} differs in the target")
