"""``LmdbStore``: the reference ObjectsStore + PermissionsStore on LMDB.

LMDB is a memory-mapped copy-on-write B+tree with one writer and lock-free readers, crash-safe
by construction. Layout (named sub-databases; ``k(s)`` is a 2-byte length then the UTF-8 bytes):

    meta          b"format_version" -> decimal format version
    uids          uid -> seq
    objects       seq -> record [uid, owner, state name, wrapping key uid, tags, object,
                  attributes]
    tags          tag -> seq            (duplicates sorted)
    owners        owner -> seq          (duplicates sorted)
    wrapped       wrapping key uid -> seq
    grants        k(uid) + user -> granted operation names, comma separated
    user_grants   user -> uid

``seq`` is an 8-byte big-endian sequence number given at creation: records and the per-owner,
per-tag and per-wrapping-key lists are appended to, not inserted at random places. A durable
commit's cost grows with the number of B+tree pages it dirties, so this layout keeps a group
commit of 32 random-uid creates to about half the pages of a uid-keyed one (measured: twice the
durable throughput). Grants are keyed by uid: they may exist before their object.

so ``find``, ``list_uids_for_tags``, ``list_user_operations_granted`` and ``find_wrapped_by`` start
from an index, never from a scan of every object. Point reads run inline on the event loop (a few
microseconds); scans run in a worker thread; writes go through the group-commit writer thread.
Uids, owners, users and tags are limited to 250 UTF-8 bytes (LMDB's key size limit).

The dumps (``Dumpable``) read one batch per read transaction, in a worker thread: every batch is a
consistent snapshot, the whole dump is not (copy a store nobody writes to). UTF-8 byte order is
code point order, so ``uids`` gives uid order; ``grants``, ordered by uid length first, is read
as one sorted run per uid length, merged.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import anyio
import anyio.to_thread
import lmdb
import msgspec

from kms_iface._completion import Completion
from kms_iface.errors import DbError, InvalidRequestError, MalformedKmipError, UnauthorizedError
from kms_iface.kmip import msgpack as kmip_msgpack
from kms_iface.kmip.attributes import Attributes, validate_tags
from kms_iface.kmip.enums import KmipOperation, State, from_name, to_name
from kms_iface.kmip.objects import Object
from kms_iface.secrets import wipe
from kms_iface.stores._checks import (
    ATTRIBUTES_CHECK,
    MAX_NAME_BYTES,
    OBJECT_CHECK,
    check_object,
    check_operation,
    check_state,
    encode_checked,
    name_bytes,
)
from kms_iface.stores._group_commit import GroupCommitWriter
from kms_iface.stores._uids import new_uid
from kms_iface.stores.base import (
    AtomicOperation,
    Create,
    Delete,
    Dumpable,
    FoundObject,
    Grant,
    ObjectsStore,
    ObjectWithMetadata,
    PermissionsStore,
    StoredObject,
    UpdateObject,
    UpdateState,
    Upsert,
)

__all__ = ["LmdbStore"]

T = TypeVar("T")

FORMAT_VERSION: Final = 1
DEFAULT_MAP_SIZE: Final = 64 << 30
WILDCARD_USER: Final = "*"
INLINE_READ_LIMIT: Final = 256  # records a read may touch on the event loop thread
_DB_NAMES: Final = (
    b"meta",
    b"uids",
    b"objects",
    b"tags",
    b"owners",
    b"wrapped",
    b"grants",
    b"user_grants",
)
_DUPSORT: Final = frozenset({b"tags", b"owners", b"wrapped", b"user_grants"})


class _Tables:
    """The sub-database handles of one environment, and the writer's next sequence number."""

    __slots__ = (
        "grants",
        "meta",
        "next_seq",
        "objects",
        "owners",
        "tags",
        "uids",
        "user_grants",
        "wrapped",
    )

    def __init__(self, env: lmdb.Environment) -> None:
        for name in _DB_NAMES:
            setattr(self, name.decode(), env.open_db(name, dupsort=name in _DUPSORT))
        self.next_seq = 0

    def start_batch(self, txn: lmdb.Transaction) -> None:
        """Read the last sequence number: the writer holds LMDB's write lock, so it is current."""
        cursor = txn.cursor(db=self.objects)
        self.next_seq = int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 1

    def take_seq(self) -> bytes:
        """A fresh sequence number for this batch (numbers of rolled-back jobs are not reused)."""
        seq = self.next_seq
        self.next_seq += 1
        return seq.to_bytes(8, "big")

    grants: Any
    meta: Any
    objects: Any
    owners: Any
    tags: Any
    uids: Any
    user_grants: Any
    wrapped: Any


class _Record(msgspec.Struct, array_like=True):
    uid: str
    owner: str
    state: str
    wrapped_by: str | None
    tags: list[str]
    object: Object
    attributes: Attributes


class _Header(msgspec.Struct, array_like=True):
    """A record with object and attributes left encoded: index upkeep never decodes them."""

    uid: str
    owner: str
    state: str
    wrapped_by: str | None
    tags: list[str]
    object: msgspec.Raw
    attributes: msgspec.Raw


class _Listing(msgspec.Struct, array_like=True):
    """A record with only the object left encoded: what ``find`` needs."""

    uid: str
    owner: str
    state: str
    wrapped_by: str | None
    tags: list[str]
    object: msgspec.Raw
    attributes: Attributes


_ENCODER: Final = kmip_msgpack.encoder()
_RECORD: Final = kmip_msgpack.decoder(_Record)
_HEADER: Final = msgspec.msgpack.Decoder(_Header)
_LISTING: Final = kmip_msgpack.decoder(_Listing)


class _Payload:
    """An object and its attributes, checked and encoded by the caller, off the writer thread.

    The encoded buffers hold key material: ``wipe()`` clears them once the write is done.
    """

    __slots__ = ("attributes", "insert", "object", "state", "wrapped_by")

    def __init__(self, obj: object, attributes: object) -> None:
        check_object(obj, attributes)
        assert isinstance(attributes, Attributes)
        self.object = encode_checked(obj, OBJECT_CHECK, "KMIP object")
        try:
            self.attributes = encode_checked(attributes, ATTRIBUTES_CHECK, "KMIP attributes")
        except InvalidRequestError:
            wipe(self.object)
            raise
        self.state = None if attributes.state is None else State(attributes.state)
        self.wrapped_by: str | None = obj.wrapping_key_uid()  # type: ignore[attr-defined]
        if self.wrapped_by is not None:
            name_bytes(self.wrapped_by, "the wrapping key uid")
        self.insert: _Insert | None = None

    def prepare_insert(self, uid: str, owner: str, state: State, tags: set[str]) -> None:
        """Encode the whole record of a new object now, so that the writer only puts it."""
        self.insert = _Insert(uid, owner, self, state, tags)

    def record(self, uid: str, owner: str, state: str, tags: list[str]) -> _Header:
        return _Header(
            uid,
            owner,
            state,
            self.wrapped_by,
            tags,
            msgspec.Raw(self.object),
            msgspec.Raw(self.attributes),
        )

    def wipe(self) -> None:
        wipe(self.object)
        wipe(self.attributes)
        if self.insert is not None:
            wipe(self.insert.record)


class _Insert:
    """A new object's record and index keys, all encoded before the writer thread sees them."""

    __slots__ = ("owner", "record", "tags", "uid", "wrapped_by")

    def __init__(
        self, uid: str, owner: str, payload: _Payload, state: State, tags: set[str]
    ) -> None:
        self.uid = uid.encode()
        self.owner = owner.encode()
        self.wrapped_by = None if payload.wrapped_by is None else payload.wrapped_by.encode()
        self.tags = [tag.encode() for tag in tags]
        self.record = bytearray()
        _ENCODER.encode_into(payload.record(uid, owner, state.name, sorted(tags)), self.record)

    def apply(self, txn: lmdb.Transaction, dbs: _Tables) -> None:
        """Put the record and its index entries; a taken uid raises before anything is written."""
        seq = dbs.take_seq()
        if not txn.put(self.uid, seq, db=dbs.uids, overwrite=False):
            raise DbError(f"an object with uid {self.uid.decode()!r} already exists")
        txn.put(seq, self.record, db=dbs.objects, append=True)
        txn.put(self.owner, seq, db=dbs.owners)
        if self.wrapped_by is not None:
            txn.put(self.wrapped_by, seq, db=dbs.wrapped)
        for tag in self.tags:
            txn.put(tag, seq, db=dbs.tags)


def _put_record(txn: lmdb.Transaction, db: Any, seq: bytes, record: _Header, append: bool) -> None:
    buffer = bytearray()
    _ENCODER.encode_into(record, buffer)
    try:
        txn.put(seq, buffer, db=db, append=append)
    finally:
        wipe(buffer)


class _Environment:
    """One open LMDB environment per directory and process, shared by its ``LmdbStore`` objects."""

    registry: ClassVar[dict[str, _Environment]] = {}
    registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str, map_size: int, durable: bool) -> None:
        self.path = path
        self.users = 0
        self.durable = durable
        self.stale = False
        self.env = lmdb.open(
            path,
            map_size=map_size,
            subdir=True,
            max_dbs=len(_DB_NAMES),
            sync=durable,
            metasync=durable,
            mode=0o600,
            readahead=False,
            max_readers=256,
        )
        try:
            self.dbs = _Tables(self.env)
            self._check_format()
            for file in ("data.mdb", "lock.mdb"):
                os.chmod(os.path.join(path, file), 0o600)
            self.writer = GroupCommitWriter(
                self.env, f"kms-iface-lmdb-writer:{path}", self.dbs.start_batch
            )
        except BaseException:
            self.env.close()
            raise

    def _check_format(self) -> None:
        meta = self.dbs.meta
        with self.env.begin(write=True) as txn:
            stored = txn.get(b"format_version", db=meta)
            if stored is None:
                txn.put(b"format_version", str(FORMAT_VERSION).encode(), db=meta)
                return
        try:
            version = int(bytes(stored))
        except ValueError:
            raise DbError(f"the store at {self.path} has an unreadable format version") from None
        if version > FORMAT_VERSION:
            raise DbError(
                f"the store at {self.path} has format version {version}; this kms_iface reads "
                f"format version {FORMAT_VERSION} and older: upgrade kms_iface"
            )

    @classmethod
    def acquire(cls, path: str, map_size: int, durable: bool) -> _Environment:
        with cls.registry_lock:
            shared = cls.registry.get(path)
            if shared is None:
                shared = cls(path, map_size, durable)
                cls.registry[path] = shared
            elif shared.durable != durable:
                raise InvalidRequestError(
                    f"the store at {path} is already open in this process with durable="
                    f"{shared.durable}"
                )
            shared.users += 1
            return shared

    def release(self) -> None:
        # Under the registry lock to the end, so that an open() of the same directory never
        # meets an environment that is half closed.
        with self.registry_lock:
            self.users -= 1
            if self.users or self.stale:
                return
            del self.registry[self.path]
            self.writer.stop()
            self.env.close()

    @classmethod
    def forget_after_fork(cls) -> None:
        """In a forked child: inherited environments are unusable (LMDB forbids using them across
        fork, and their writer thread did not survive); close them so the child can open its own.
        """
        inherited = list(cls.registry.values())
        cls.registry = {}
        cls.registry_lock = threading.Lock()
        for shared in inherited:
            shared.stale = True
            with contextlib.suppress(lmdb.Error):
                shared.env.close()


os.register_at_fork(after_in_child=_Environment.forget_after_fork)


def _k(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _tag_set(tags: Iterable[str]) -> set[str]:
    checked = validate_tags(tags)
    for tag in checked:
        name_bytes(tag, "a tag")
    return checked


def _grant_row(
    uid: str, user: str, operations: Iterable[KmipOperation]
) -> tuple[bytes, bytes, bytes, set[KmipOperation]]:
    """Checked uid and user, the key of their grant row, and the checked operations."""
    uid_b = name_bytes(uid, "uid")
    user_b = name_bytes(user, "user")
    return uid_b, user_b, _k(uid) + user_b, _operations(operations)


def _operations(operations: Iterable[KmipOperation]) -> set[KmipOperation]:
    if isinstance(operations, (str, bytes)):
        raise InvalidRequestError("operations must be a collection of KmipOperation")
    result = set()
    for operation in operations:
        if not isinstance(operation, KmipOperation):
            raise InvalidRequestError(f"{operation!r} is not a KmipOperation")
        result.add(operation)
    return result


def _encode_ops(operations: set[KmipOperation]) -> bytes:
    return ",".join(sorted(to_name(op) for op in operations)).encode()


def _decode_ops(raw: bytes | memoryview) -> set[KmipOperation]:
    text = bytes(raw).decode()
    return {from_name(KmipOperation, name) for name in text.split(",")} if text else set()


class LmdbStore(ObjectsStore, PermissionsStore, Dumpable):
    """ObjectsStore + PermissionsStore (+ Dumpable) in an LMDB environment under ``path``.

    ``durable=True`` makes every acknowledged write survive a power loss (fsync per group
    commit); ``durable=False`` survives a process crash but may lose the last commits on power
    loss. ``map_size`` bounds the store's size (address space only; the file grows as needed): a
    write beyond it fails with ``DbError`` and changes nothing, and reopening with a larger
    ``map_size`` grows it. The constructor does no I/O.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        durable: bool = True,
    ) -> None:
        if not isinstance(map_size, int) or map_size < 1 << 20:
            raise InvalidRequestError("map_size must be an int of at least 1 MiB")
        self._path = Path(path)
        self._map_size = map_size
        self._durable = bool(durable)
        self._shared: _Environment | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "open" if self._shared is not None else "closed"
        return f"LmdbStore({str(self._path)!r}, durable={self._durable}, {state})"

    # -- life cycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating the directory 0700 and the files 0600 when missing); idempotent."""
        if self._shared is not None:
            return
        shared = await anyio.to_thread.run_sync(self._open_sync)
        with self._lock:
            if self._shared is None:
                self._shared = shared
                return
        await anyio.to_thread.run_sync(shared.release)

    def _open_sync(self) -> _Environment:
        try:
            self._path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self._path, 0o700)
            return _Environment.acquire(os.path.realpath(self._path), self._map_size, self._durable)
        except lmdb.Error as exc:
            raise DbError(f"cannot open the LMDB store at {self._path}: {exc}") from None
        except OSError as exc:
            raise DbError(f"cannot open the LMDB store at {self._path}: {exc.strerror}") from None

    async def close(self) -> None:
        """Wait for pending writes, then close; idempotent."""
        with self._lock:
            shared, self._shared = self._shared, None
        if shared is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shared.release)

    def _env(self) -> _Environment:
        shared = self._shared
        if shared is None:
            raise DbError("the store is not open: use `async with store:` or `await store.open()`")
        if shared.stale:
            raise DbError(
                "the store was opened before this process was forked: open a new LmdbStore here"
            )
        return shared

    # -- plumbing ------------------------------------------------------------------------------

    async def _write(
        self, job: Callable[[lmdb.Transaction, _Tables], T], *, guarded: bool = False
    ) -> T:
        """Run ``job`` in the writer thread; ``guarded``: it can only fail before its first put."""
        shared = self._env()
        dbs = shared.dbs
        completion = Completion()
        shared.writer.submit(lambda txn: job(txn, dbs), completion, guarded=guarded)
        result: T = await completion.wait()
        return result

    def _read(self, reader: Callable[[lmdb.Transaction, _Tables], T]) -> T:
        shared = self._env()
        try:
            with shared.env.begin(buffers=True) as txn:
                return reader(txn, shared.dbs)
        except lmdb.Error as exc:
            raise DbError(f"LMDB read failed: {exc}") from None

    async def _scan(self, reader: Callable[[lmdb.Transaction, _Tables], T]) -> T:
        return await anyio.to_thread.run_sync(self._read, reader)

    @staticmethod
    def _dups(txn: lmdb.Transaction, db: Any, key: bytes) -> Iterator[bytes]:
        cursor = txn.cursor(db=db)
        if cursor.set_key(key):
            for value in cursor.iternext_dup():
                yield bytes(value)

    @staticmethod
    def _decode(decoder: msgspec.msgpack.Decoder[T], raw: Any, uid: str) -> T:
        try:
            return kmip_msgpack.decode(decoder, raw, "stored record")
        except MalformedKmipError as exc:
            raise DbError(f"the stored record of {uid!r} is unreadable: {exc.message}") from None

    # -- write jobs (run in the writer thread) -------------------------------------------------

    @staticmethod
    def _locate(txn: lmdb.Transaction, dbs: _Tables, uid: str) -> tuple[bytes, _Header] | None:
        seq = txn.get(uid.encode(), db=dbs.uids)
        if seq is None:
            return None
        seq = bytes(seq)
        raw = txn.get(seq, db=dbs.objects)
        if raw is None:
            raise DbError(f"the store is inconsistent: {uid!r} is indexed but has no record")
        return seq, LmdbStore._decode(_HEADER, raw, uid)

    @staticmethod
    def _put_tags(txn: lmdb.Transaction, dbs: _Tables, seq: bytes, tags: Iterable[str]) -> None:
        for tag in tags:
            txn.put(tag.encode(), seq, db=dbs.tags)

    @staticmethod
    def _drop_tags(txn: lmdb.Transaction, dbs: _Tables, seq: bytes, tags: Iterable[str]) -> None:
        for tag in tags:
            txn.delete(tag.encode(), seq, db=dbs.tags)

    def _replace(
        self,
        txn: lmdb.Transaction,
        dbs: _Tables,
        seq: bytes,
        old: _Header,
        payload: _Payload,
        tags: set[str] | None,
        state: str,
    ) -> None:
        wrapped_by = payload.wrapped_by
        if old.wrapped_by != wrapped_by:
            if old.wrapped_by is not None:
                txn.delete(old.wrapped_by.encode(), seq, db=dbs.wrapped)
            if wrapped_by is not None:
                txn.put(wrapped_by.encode(), seq, db=dbs.wrapped)
        if tags is not None:
            self._drop_tags(txn, dbs, seq, old.tags)
            self._put_tags(txn, dbs, seq, tags)
        kept = old.tags if tags is None else sorted(tags)
        _put_record(txn, dbs.objects, seq, payload.record(old.uid, old.owner, state, kept), False)

    def _update_object(
        self,
        txn: lmdb.Transaction,
        dbs: _Tables,
        uid: str,
        payload: _Payload,
        tags: set[str] | None,
    ) -> None:
        found = self._locate(txn, dbs, uid)
        if found is not None:
            seq, old = found
            self._replace(txn, dbs, seq, old, payload, tags, old.state)

    def _update_state(self, txn: lmdb.Transaction, dbs: _Tables, uid: str, state: State) -> None:
        found = self._locate(txn, dbs, uid)
        if found is not None and found[1].state != state.name:
            seq, old = found
            old.state = state.name
            _put_record(txn, dbs.objects, seq, old, False)

    def _delete(self, txn: lmdb.Transaction, dbs: _Tables, uid: str) -> None:
        found = self._locate(txn, dbs, uid)
        if found is not None:
            seq, old = found
            txn.delete(old.owner.encode(), seq, db=dbs.owners)
            if old.wrapped_by is not None:
                txn.delete(old.wrapped_by.encode(), seq, db=dbs.wrapped)
            self._drop_tags(txn, dbs, seq, old.tags)
            txn.delete(seq, db=dbs.objects)
            txn.delete(uid.encode(), db=dbs.uids)
        prefix = _k(uid)
        cursor = txn.cursor(db=dbs.grants)
        users = []
        if cursor.set_range(prefix):
            for key in cursor.iternext(values=False):
                key = bytes(key)
                if not key.startswith(prefix):
                    break
                users.append(key[len(prefix) :])
        uid_b = uid.encode()
        for user_b in users:
            txn.delete(prefix + user_b, db=dbs.grants)
            txn.delete(user_b, uid_b, db=dbs.user_grants)

    def _upsert(
        self,
        txn: lmdb.Transaction,
        dbs: _Tables,
        user: str,
        uid: str,
        payload: _Payload,
        tags: set[str] | None,
        state: State,
    ) -> None:
        found = self._locate(txn, dbs, uid)
        if found is None:
            assert payload.insert is not None
            payload.insert.apply(txn, dbs)
        elif found[1].owner != user:
            raise UnauthorizedError(
                f"object {uid!r} belongs to another user: the upsert is refused and the "
                "batch rolled back"
            )
        else:
            seq, old = found
            self._replace(txn, dbs, seq, old, payload, tags, state.name)

    # -- ObjectsStore --------------------------------------------------------------------------

    async def create(
        self,
        uid: str | None,
        owner: str,
        object: Object,
        attributes: Attributes,
        tags: Iterable[str],
    ) -> str:
        """Store a new object; ``uid=None`` makes a UUIDv4. An existing uid raises ``DbError``."""
        fresh = new_uid() if uid is None else uid
        name_bytes(fresh, "uid")
        name_bytes(owner, "owner")
        tag_set = _tag_set(tags)
        payload = _Payload(object, attributes)
        try:
            payload.prepare_insert(fresh, owner, payload.state or State.PreActive, tag_set)
            insert = payload.insert
            assert insert is not None

            def job(txn: lmdb.Transaction, dbs: _Tables) -> str:
                insert.apply(txn, dbs)
                return fresh

            return await self._write(job, guarded=True)
        finally:
            payload.wipe()

    async def retrieve(self, uid: str) -> ObjectWithMetadata | None:
        """The object with owner, stored state and stored attributes, or None."""
        # The hot read, written out: a short str needs no length check (62 characters are at
        # most 248 UTF-8 bytes), and no closure is made per call as _read would.
        if type(uid) is str and 0 < len(uid) <= 62:
            try:
                uid_b = uid.encode()
            except UnicodeEncodeError:
                uid_b = name_bytes(uid, "uid")
        else:
            uid_b = name_bytes(uid, "uid")
        shared = self._env()
        try:
            with shared.env.begin(buffers=True) as txn:
                seq = txn.get(uid_b, db=shared.dbs.uids)
                if seq is None:
                    return None
                raw = txn.get(seq, db=shared.dbs.objects)
                if raw is None:
                    raise DbError(
                        f"the store is inconsistent: {uid!r} is indexed but has no record"
                    )
                try:
                    record = _RECORD.decode(raw)
                except (msgspec.MsgspecError, RecursionError, UnicodeError):
                    record = self._decode(_RECORD, raw, uid)
        except lmdb.Error as exc:
            raise DbError(f"LMDB read failed: {exc}") from None
        return ObjectWithMetadata(
            uid, record.object, record.owner, State[record.state], record.attributes
        )

    async def retrieve_tags(self, uid: str) -> set[str]:
        """The object's tags (empty for an unknown uid)."""
        name_bytes(uid, "uid")

        def read(txn: lmdb.Transaction, dbs: _Tables) -> set[str]:
            found = self._locate(txn, dbs, uid)
            return set() if found is None else set(found[1].tags)

        return self._read(read)

    async def update_object(
        self,
        uid: str,
        object: Object,
        attributes: Attributes,
        tags: Iterable[str] | None = None,
    ) -> None:
        """Replace object and attributes, keep the state; ``tags=None`` keeps the tags."""
        name_bytes(uid, "uid")
        tag_set = None if tags is None else _tag_set(tags)
        payload = _Payload(object, attributes)
        try:
            await self._write(lambda txn, dbs: self._update_object(txn, dbs, uid, payload, tag_set))
        finally:
            payload.wipe()

    async def update_state(self, uid: str, state: State) -> None:
        """Change only the stored state (an unknown uid is ignored)."""
        name_bytes(uid, "uid")
        checked = check_state(state)
        await self._write(lambda txn, dbs: self._update_state(txn, dbs, uid, checked))

    async def delete(self, uid: str) -> None:
        """Remove object, tags and permissions; an unknown uid is not an error."""
        name_bytes(uid, "uid")
        await self._write(lambda txn, dbs: self._delete(txn, dbs, uid))

    async def atomic(self, user: str, operations: Sequence[AtomicOperation]) -> list[str]:
        """Apply ``operations`` in order in one all-or-nothing transaction; their uids in order."""
        name_bytes(user, "user")
        if isinstance(operations, (str, bytes)) or not isinstance(operations, Sequence):
            raise InvalidRequestError("operations must be a sequence of atomic operations")
        plan: list[tuple[str, AtomicOperation, _Payload | None, set[str] | None]] = []
        try:
            for op in operations:
                plan.append(self._plan(op, user))
            if not plan:
                return []

            def job(txn: lmdb.Transaction, dbs: _Tables) -> list[str]:
                for uid, op, payload, tags in plan:
                    if isinstance(op, UpdateState):
                        self._update_state(txn, dbs, uid, op.state)
                    elif isinstance(op, Delete):
                        self._delete(txn, dbs, uid)
                    elif payload is None:
                        raise AssertionError("a write step without its payload")
                    elif isinstance(op, Create):
                        assert payload.insert is not None
                        payload.insert.apply(txn, dbs)
                    elif isinstance(op, Upsert):
                        self._upsert(txn, dbs, user, uid, payload, tags, op.state)
                    else:
                        self._update_object(txn, dbs, uid, payload, tags)
                return [uid for uid, _, _, _ in plan]

            return await self._write(job)
        finally:
            for _, _, payload, _ in plan:
                if payload is not None:
                    payload.wipe()

    @staticmethod
    def _plan(
        op: object, user: str
    ) -> tuple[str, AtomicOperation, _Payload | None, set[str] | None]:
        """One checked step of a batch: uid, operation, encoded payload, checked tags."""
        check_operation(op, name_bytes)
        if isinstance(op, Create):
            uid = new_uid() if op.uid is None else op.uid
            new_tags = _tag_set(op.tags)
            payload = _Payload(op.object, op.attributes)
            payload.prepare_insert(uid, user, payload.state or State.PreActive, new_tags)
            return uid, op, payload, new_tags
        assert isinstance(op, (Upsert, UpdateObject, UpdateState, Delete))
        if isinstance(op, (UpdateState, Delete)):
            return op.uid, op, None, None
        tags = None if op.tags is None else _tag_set(op.tags)
        payload = _Payload(op.object, op.attributes)
        if isinstance(op, Upsert):
            payload.prepare_insert(op.uid, user, op.state, tags or set())
        return op.uid, op, payload, tags

    async def is_object_owned_by(self, uid: str, owner: str) -> bool:
        """Whether ``owner`` is exactly the owner of ``uid``."""
        name_bytes(uid, "uid")
        if not isinstance(owner, str):
            raise InvalidRequestError("owner must be a string")

        def read(txn: lmdb.Transaction, dbs: _Tables) -> bool:
            found = self._locate(txn, dbs, uid)
            return found is not None and found[1].owner == owner

        return self._read(read)

    async def list_uids_for_tags(self, tags: Iterable[str]) -> set[str]:
        """The uids having every tag of ``tags`` (at least one tag is required)."""
        wanted = validate_tags(tags)
        if not wanted:
            raise InvalidRequestError("list_uids_for_tags needs at least one tag")

        def read(txn: lmdb.Transaction, dbs: _Tables) -> set[str]:
            objects = dbs.objects
            return {
                self._decode(_HEADER, txn.get(seq, db=objects), "?").uid
                for seq in self._seqs_with_tags(txn, dbs, wanted)
            }

        # An index lookup: inline while the shortest tag list is short, in a worker thread if not.
        sized = self._read(lambda txn, dbs: self._tag_keys(txn, dbs, wanted))
        if not sized:
            return set()
        if sized[0][0] <= INLINE_READ_LIMIT:
            return self._read(read)
        return await self._scan(read)

    @staticmethod
    def _tag_keys(txn: lmdb.Transaction, dbs: _Tables, tags: set[str]) -> list[tuple[int, bytes]]:
        """``(count, key)`` of each tag, shortest list first; empty when a tag has no object."""
        cursor = txn.cursor(db=dbs.tags)
        sized = []
        for tag in tags:
            key = _lookup_key(tag)
            if key is None or not cursor.set_key(key):
                return []
            sized.append((cursor.count(), key))
        sized.sort()
        return sized

    def _tagged(
        self,
        txn: lmdb.Transaction,
        dbs: _Tables,
        sized: list[tuple[int, bytes]],
        seqs: Iterable[bytes],
    ) -> set[bytes]:
        """The sequence numbers of ``seqs`` carrying every tag of ``sized``."""
        cursor = txn.cursor(db=dbs.tags)
        return {seq for seq in seqs if all(cursor.set_key_dup(key, seq) for _, key in sized)}

    def _seqs_with_tags(self, txn: lmdb.Transaction, dbs: _Tables, tags: set[str]) -> set[bytes]:
        """The sequence numbers carrying every tag: the shortest tag list, filtered by the rest."""
        sized = self._tag_keys(txn, dbs, tags)
        if not sized:
            return set()
        return self._tagged(txn, dbs, sized[1:], self._dups(txn, dbs.tags, sized[0][1]))

    async def find(
        self,
        researched_attributes: Attributes | None,
        state: State | None,
        user: str,
        user_must_be_owner: bool,
        vendor_id: str = "cosmian",
    ) -> list[FoundObject]:
        """Objects owned by (or, unless ``user_must_be_owner``, granted to) ``user`` that match.

        Filters: ``state``; from the searched attributes UniqueIdentifier, ObjectGroup,
        ObjectGroupMember, CryptographicAlgorithm, CryptographicLength, KeyFormatType,
        ObjectType, ApplicationSpecificInformation, every Link and every Name; the tags of the
        ``vendor_id`` tag attribute (all required). Other attributes are ignored.
        """
        user_b = name_bytes(user, "user")
        if researched_attributes is not None and not isinstance(researched_attributes, Attributes):
            raise InvalidRequestError("researched_attributes must be Attributes or None")
        if state is not None:
            check_state(state)
        search = researched_attributes or Attributes()
        tags = validate_tags(search.get_tags(vendor_id))
        must_own = bool(user_must_be_owner)

        def read(txn: lmdb.Transaction, dbs: _Tables) -> list[FoundObject]:
            candidates = self._find_candidates(txn, dbs, search, tags, user_b, must_own)
            grants = dbs.grants
            found = []
            for seq in sorted(candidates):
                listing = self._decode(_LISTING, txn.get(seq, db=dbs.objects), "?")
                uid = listing.uid
                if state is not None and listing.state != state.name:
                    continue
                if listing.owner != user and (
                    must_own or txn.get(_k(uid) + user_b, db=grants) is None
                ):
                    continue
                if _matches(search, listing.attributes):
                    found.append((uid, State[listing.state], listing.attributes))
            return found

        return await self._scan(read)

    def _find_candidates(
        self,
        txn: lmdb.Transaction,
        dbs: _Tables,
        search: Attributes,
        tags: set[str],
        user_b: bytes,
        must_own: bool,
    ) -> set[bytes]:
        """A superset of the sequence numbers ``find`` may return, from the narrowest index.

        The uid when searched for; with tags, the shortest of the tag lists and the user's own
        list, checked against the other tags; else the objects owned by (and granted to) the
        user. Access is checked afterwards, record by record.
        """
        uids = dbs.uids
        if search.unique_identifier is not None:
            wanted = _lookup_key(search.unique_identifier)
            seq = None if wanted is None else txn.get(wanted, db=uids)
            return set() if seq is None else {bytes(seq)}
        owners = txn.cursor(db=dbs.owners)
        owned = owners.count() if owners.set_key(user_b) else 0
        if tags:
            sized = self._tag_keys(txn, dbs, tags)
            if not sized:
                return set()
            if must_own and owned < sized[0][0]:
                return self._tagged(txn, dbs, sized, self._dups(txn, dbs.owners, user_b))
            return self._seqs_with_tags(txn, dbs, tags)
        candidates = set(self._dups(txn, dbs.owners, user_b))
        if not must_own:
            for uid_b in self._dups(txn, dbs.user_grants, user_b):
                seq = txn.get(uid_b, db=uids)
                if seq is not None:
                    candidates.add(bytes(seq))
        return candidates

    async def find_wrapped_by(self, wrapping_key_uid: str, user: str) -> list[FoundObject]:
        """Objects owned by or directly granted to ``user`` wrapped by ``wrapping_key_uid``."""
        if not isinstance(wrapping_key_uid, str):
            raise InvalidRequestError("wrapping_key_uid must be a string")
        user_b = name_bytes(user, "user")
        kek = _lookup_key(wrapping_key_uid)
        if kek is None:
            return []

        def read(txn: lmdb.Transaction, dbs: _Tables) -> list[FoundObject]:
            found = []
            for seq in self._dups(txn, dbs.wrapped, kek):
                listing = self._decode(_LISTING, txn.get(seq, db=dbs.objects), "?")
                uid = listing.uid
                granted = txn.get(_k(uid) + user_b, db=dbs.grants) is not None
                if listing.owner == user or granted:
                    found.append((uid, State[listing.state], listing.attributes))
            return found

        return await self._scan(read)

    async def count_all_non_destroyed(self) -> int:
        """How many objects are neither Destroyed nor Destroyed_Compromised (a full scan)."""

        def read(txn: lmdb.Transaction, dbs: _Tables) -> int:
            destroyed = {State.Destroyed.name, State.Destroyed_Compromised.name}
            count = 0
            for _, raw in txn.cursor(db=dbs.objects):
                if self._decode(_HEADER, raw, "?").state not in destroyed:
                    count += 1
            return count

        return await self._scan(read)

    # -- PermissionsStore ----------------------------------------------------------------------

    async def list_user_operations_granted(
        self, user: str
    ) -> dict[str, tuple[str, State, set[KmipOperation]]]:
        """``{uid: (owner, state, operations)}`` of the direct grants to ``user``.

        A grant on a missing object reports owner ``""`` and state Active; grants to ``"*"`` are
        not listed for other users.
        """
        user_b = name_bytes(user, "user")

        def read(
            txn: lmdb.Transaction, dbs: _Tables
        ) -> dict[str, tuple[str, State, set[KmipOperation]]]:
            result = {}
            for uid_b in self._dups(txn, dbs.user_grants, user_b):
                uid = uid_b.decode()
                ops = txn.get(_k(uid) + user_b, db=dbs.grants)
                if ops is None:
                    continue
                found = self._locate(txn, dbs, uid)
                if found is None:
                    result[uid] = ("", State.Active, _decode_ops(ops))
                else:
                    result[uid] = (found[1].owner, State[found[1].state], _decode_ops(ops))
            return result

        return await self._scan(read)

    async def list_object_operations_granted(self, uid: str) -> dict[str, set[KmipOperation]]:
        """``{user: operations}`` granted on ``uid``."""
        name_bytes(uid, "uid")
        prefix = _k(uid)

        def read(txn: lmdb.Transaction, dbs: _Tables) -> dict[str, set[KmipOperation]]:
            result = {}
            cursor = txn.cursor(db=dbs.grants)
            if cursor.set_range(prefix):
                for key, value in cursor:
                    key = bytes(key)
                    if not key.startswith(prefix):
                        break
                    result[key[len(prefix) :].decode()] = _decode_ops(value)
            return result

        return self._read(read)

    async def grant_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None:
        """Add ``operations`` to the grant of ``user`` on ``uid`` (the object need not exist)."""
        uid_b, user_b, key, ops = _grant_row(uid, user, operations)
        if not ops:
            return

        def job(txn: lmdb.Transaction, dbs: _Tables) -> None:
            current = txn.get(key, db=dbs.grants)
            merged = ops | (set() if current is None else _decode_ops(current))
            txn.put(key, _encode_ops(merged), db=dbs.grants)
            txn.put(user_b, uid_b, db=dbs.user_grants)

        await self._write(job)

    async def remove_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None:
        """Remove ``operations`` from the grant; a grant left empty disappears."""
        uid_b, user_b, key, ops = _grant_row(uid, user, operations)
        if not ops:
            return

        def job(txn: lmdb.Transaction, dbs: _Tables) -> None:
            current = txn.get(key, db=dbs.grants)
            if current is None:
                return
            remaining = _decode_ops(current) - ops
            if remaining:
                txn.put(key, _encode_ops(remaining), db=dbs.grants)
            else:
                txn.delete(key, db=dbs.grants)
                txn.delete(user_b, uid_b, db=dbs.user_grants)

        await self._write(job)

    async def list_user_operations_on_object(
        self, uid: str, user: str, no_inherited_access: bool
    ) -> set[KmipOperation]:
        """Direct grants of ``user`` on ``uid``, plus those of ``"*"`` unless told not to."""
        name_bytes(uid, "uid")
        user_b = name_bytes(user, "user")
        prefix = _k(uid)
        inherit = not no_inherited_access and user != WILDCARD_USER

        def read(txn: lmdb.Transaction, dbs: _Tables) -> set[KmipOperation]:
            ops = set()
            direct = txn.get(prefix + user_b, db=dbs.grants)
            if direct is not None:
                ops |= _decode_ops(direct)
            if inherit:
                wildcard = txn.get(prefix + WILDCARD_USER.encode(), db=dbs.grants)
                if wildcard is not None:
                    ops |= _decode_ops(wildcard)
            return ops

        return self._read(read)

    # -- Dumpable ------------------------------------------------------------------------------

    async def dump_objects(self, batch: int = 1000) -> AsyncIterator[list[StoredObject]]:
        """Every object (Destroyed ones too), ``batch`` at a time, in uid order."""
        size = _batch_size(batch)
        after: bytes | None = None
        while True:
            page = await self._scan(functools.partial(self._object_page, after=after, size=size))
            if page:
                yield page
            if len(page) < size:
                return
            after = page[-1].uid.encode()

    def _object_page(
        self, txn: lmdb.Transaction, dbs: _Tables, *, after: bytes | None, size: int
    ) -> list[StoredObject]:
        """Up to ``size`` objects whose uid comes after ``after`` (from the first when None)."""
        cursor = txn.cursor(db=dbs.uids)
        # The smallest key greater than ``after`` is ``after + b"\x00"``.
        if not (cursor.first() if after is None else cursor.set_range(after + b"\x00")):
            return []
        page = []
        for uid_b, seq in cursor.iternext():
            uid = bytes(uid_b).decode()
            raw = txn.get(seq, db=dbs.objects)
            if raw is None:
                raise DbError(f"the store is inconsistent: {uid!r} is indexed but has no record")
            record = self._decode(_RECORD, raw, uid)
            page.append(
                StoredObject(
                    uid,
                    record.owner,
                    State[record.state],
                    record.object,
                    record.attributes,
                    frozenset(record.tags),
                )
            )
            if len(page) == size:
                break
        return page

    async def dump_grants(self, batch: int = 1000) -> AsyncIterator[list[Grant]]:
        """Every grant, ``batch`` at a time, in (uid, user) order (objects need not exist)."""
        size = _batch_size(batch)
        after: tuple[bytes, bytes] | None = None
        while True:
            page = await self._scan(functools.partial(self._grant_page, after=after, size=size))
            if page:
                yield page
            if len(page) < size:
                return
            after = page[-1].uid.encode(), page[-1].user.encode()

    @staticmethod
    def _grant_page(
        txn: lmdb.Transaction, dbs: _Tables, *, after: tuple[bytes, bytes] | None, size: int
    ) -> list[Grant]:
        """Up to ``size`` grants whose (uid, user) comes after ``after``: the runs, merged."""
        probe = txn.cursor(db=dbs.grants)
        runs = []
        length = 0
        while probe.set_range(length.to_bytes(2, "big")):
            length = int.from_bytes(bytes(probe.key())[:2], "big")
            runs.append(_grant_run(txn, dbs, length, after))
            length += 1
        return [
            Grant(uid_b.decode(), user_b.decode(), frozenset(_decode_ops(ops)))
            for uid_b, user_b, ops in itertools.islice(heapq.merge(*runs), size)
        ]


def _batch_size(batch: object) -> int:
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise InvalidRequestError("batch must be an int of at least 1")
    return batch


def _grant_run(
    txn: lmdb.Transaction, dbs: _Tables, length: int, after: tuple[bytes, bytes] | None
) -> Iterator[tuple[bytes, bytes, bytes]]:
    """The grants on uids of ``length`` bytes after ``after``: (uid, user, operations), sorted.

    Within one uid length, key order is (uid, user) order. The seek, from ``after``'s uid: of
    this length, it lands on ``after`` (skipped); shorter, on the first longer uid that follows
    it; longer, on its first ``length`` bytes, whose grants all come before ``after`` (skipped).
    """
    prefix = length.to_bytes(2, "big")
    cursor = txn.cursor(db=dbs.grants)
    start = prefix
    if after is not None:
        uid_b, user_b = after
        start += uid_b + user_b if len(uid_b) == length else uid_b[:length]
    if not cursor.set_range(start):
        return
    for key, ops in cursor.iternext():
        key = bytes(key)
        if not key.startswith(prefix):
            return
        row = key[2 : 2 + length], key[2 + length :]
        if after is None or row > after:
            yield row[0], row[1], bytes(ops)


def _lookup_key(text: str) -> bytes | None:
    """``text`` as an index key, or None when no stored name can be equal to it."""
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        return None
    return raw if 0 < len(raw) <= MAX_NAME_BYTES else None


def _matches(search: Attributes, stored: Attributes) -> bool:
    """Whether ``stored`` satisfies every filter of ``search`` that ``find`` honours."""
    for field in _SCALAR_FILTERS:
        wanted = getattr(search, field)
        if wanted is not None and getattr(stored, field) != wanted:
            return False
    info = search.application_specific_information
    if info is not None:
        have = stored.application_specific_information
        if have is None or have.application_namespace != info.application_namespace:
            return False
        if info.application_data is not None and have.application_data != info.application_data:
            return False
    stored_links = set(stored.link or ())
    if any(link not in stored_links for link in search.link or ()):
        return False
    stored_names = set(stored.name or ())
    return all(name in stored_names for name in search.name or ())


_SCALAR_FILTERS: Final = (
    "object_group",
    "object_group_member",
    "cryptographic_algorithm",
    "cryptographic_length",
    "key_format_type",
    "object_type",
)
