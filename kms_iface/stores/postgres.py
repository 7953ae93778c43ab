"""``PostgresStore``: ObjectsStore + PermissionsStore (+ Dumpable) on PostgreSQL, for several KMS
servers sharing one database.

Built on psycopg 3's asyncio API and its connection pool (``psycopg_pool``). Schema version 1,
created on first open in one transaction (under an advisory lock, so concurrent first opens are
safe); a database of a newer schema version is refused. Every text column is ``COLLATE "C"``
(byte-wise: exact matches, uid order is code point order, as LMDB's)::

    parameters   name -> value                ("schema_version")
    objects      uid (primary key), owner, state (State name), wrapped_by (wrapping key uid),
                 object (MessagePack), attributes (JSONB: Cosmian's JSON, what ``find`` reads),
                 attributes_msgpack (MessagePack: what ``retrieve`` returns, exactly)
    tags         (uid, tag), deleted with their object
    permissions  (uid, user_id) -> operations (sorted text[] of names); no foreign key: a grant
                 may exist before its object

with indexes on owner, state, wrapped_by, tag, user and a GIN index on attributes. The attributes
are kept twice on purpose: JSONB is what SQL can search (``find`` turns its filters into one
containment document, passed as a parameter), MessagePack is the exact round trip (JSONB cannot
hold a NUL character, nor keep key order or integer types). Strings holding a backslash or a NUL
are escaped in the JSONB form only (``\\`` -> ``\\\\``, NUL -> ``\\0``: injective, applied to
stored and searched documents alike).

Event loops: psycopg's async API is asyncio only (3.3 has no trio support), so every store runs
its pool in an asyncio event loop of its own, in a daemon thread. Callers on asyncio or trio, in
any thread, hand their work over with ``call_soon_threadsafe`` and are woken through
``kms_iface._completion``, as the LMDB writer wakes them; one code path for both backends, and a
store is not tied to the event loop that opened it. Cost: one thread hop per call, small next to
a round trip to the server. Cancellation: work not yet started is dropped; a running read is
cancelled; a running write finishes while its caller waits (shielded), as in LmdbStore.

Retries: a connection-level failure (server gone, connection closed, admin shutdown) is retried
with backoff (0, 50 ms, doubling to 1 s) for ``connect_timeout`` seconds, for reads and for writes
whose COMMIT was never sent (the server rolls such a transaction back: nothing was applied). A
connection lost after COMMIT was sent raises ``DbOutcomeUnknownError``, never a retry that could
apply a write twice. Other errors (constraint violations, the statement timeout) are never
retried. Each write is one explicit transaction; reads run alone in autocommit mode.

Timeouts: ``connect_timeout`` bounds connecting and waiting for a pooled connection (then
``DbConnectionError`` with the server's or libpq's reason); ``statement_timeout`` is set on every
connection (also as ``idle_in_transaction_session_timeout``), and the client stops waiting for an
answer ``statement_timeout + connect_timeout`` after sending a statement (a server that stopped
answering without closing the connection). Messages and log lines name host, port, database and
user, never the password.

Names (uids, owners, users, tags) follow LmdbStore's rules (1 to 250 UTF-8 bytes), so a store
copies into the other; PostgreSQL text cannot hold NUL, so a name with one is refused on write and
finds nothing on read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, TypeAlias, TypeVar

import anyio
import anyio.to_thread
import psycopg
import psycopg.errors
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format, TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from kms_iface._completion import ABANDONED, PENDING, RUNNING, Completion, deliver
from kms_iface.errors import (
    DbConnectionError,
    DbError,
    DbOutcomeUnknownError,
    InvalidRequestError,
    MalformedKmipError,
    UnauthorizedError,
)
from kms_iface.kmip import msgpack as kmip_msgpack
from kms_iface.kmip.attributes import Attributes, validate_tags
from kms_iface.kmip.enums import KmipOperation, State, from_name, to_name
from kms_iface.kmip.json import attributes_to_json
from kms_iface.kmip.objects import Object
from kms_iface.secrets import wipe
from kms_iface.stores._checks import (
    ATTRIBUTES_CHECK,
    OBJECT_CHECK,
    OBJECT_TYPES,
    check_operation,
    check_state,
    encode_checked,
    name_bytes,
)
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

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

T = TypeVar("T")
Connection: TypeAlias = psycopg.AsyncConnection[TupleRow]

SCHEMA_VERSION: Final = 1
WILDCARD_USER: Final = "*"
DEFAULT_POOL_SIZE: Final = 8
DEFAULT_STATEMENT_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
_RECONNECT_WINDOW: Final = 2.0  # the pool gives up a reconnection chain after this, then
# starts a fresh one (first attempt at once) for the next caller that waits
_FIRST_BACKOFF: Final = 0.05
_MAX_BACKOFF: Final = 1.0
_SCHEMA_LOCK: Final = 0x6B6D735F69666163  # pg_advisory_xact_lock key: b"kms_ifac"
_LOST_SQLSTATES: Final = frozenset({"57P01", "57P02", "57P03"})  # shutdowns, cannot connect now
_DESTROYED: Final = [State.Destroyed.name, State.Destroyed_Compromised.name]
_FIND_FIELDS: Final = (
    "object_group",
    "object_group_member",
    "cryptographic_algorithm",
    "cryptographic_length",
    "key_format_type",
    "object_type",
    "application_specific_information",
    "link",
    "name",
)

_log = logging.getLogger(__name__)

_SCHEMA: Final = (
    """CREATE TABLE parameters (
        name TEXT COLLATE "C" PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE objects (
        uid TEXT COLLATE "C" PRIMARY KEY,
        owner TEXT COLLATE "C" NOT NULL,
        state TEXT COLLATE "C" NOT NULL,
        wrapped_by TEXT COLLATE "C",
        object BYTEA NOT NULL,
        attributes JSONB NOT NULL,
        attributes_msgpack BYTEA NOT NULL
    )""",
    "CREATE INDEX objects_owner ON objects (owner)",
    "CREATE INDEX objects_state ON objects (state)",
    "CREATE INDEX objects_wrapped_by ON objects (wrapped_by) WHERE wrapped_by IS NOT NULL",
    "CREATE INDEX objects_attributes ON objects USING GIN (attributes jsonb_path_ops)",
    """CREATE TABLE tags (
        uid TEXT COLLATE "C" NOT NULL REFERENCES objects (uid) ON DELETE CASCADE,
        tag TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (uid, tag)
    )""",
    "CREATE INDEX tags_tag ON tags (tag, uid)",
    """CREATE TABLE permissions (
        uid TEXT COLLATE "C" NOT NULL,
        user_id TEXT COLLATE "C" NOT NULL,
        operations TEXT[] NOT NULL,
        PRIMARY KEY (uid, user_id)
    )""",
    "CREATE INDEX permissions_user ON permissions (user_id, uid)",
)

_INSERT: Final = """
    WITH inserted AS (
        INSERT INTO objects (uid, owner, state, wrapped_by, object, attributes, attributes_msgpack)
        VALUES (%(uid)s, %(owner)s, %(state)s, %(wrapped_by)s, %(object)s, %(json)s::jsonb,
                %(msgpack)s)
        RETURNING uid
    )
    INSERT INTO tags (uid, tag)
    SELECT inserted.uid, tag FROM inserted, unnest(%(tags)s::text[]) AS tag"""
_UPSERT: Final = """
    INSERT INTO objects (uid, owner, state, wrapped_by, object, attributes, attributes_msgpack)
    VALUES (%(uid)s, %(owner)s, %(state)s, %(wrapped_by)s, %(object)s, %(json)s::jsonb,
            %(msgpack)s)
    ON CONFLICT (uid) DO UPDATE SET
        state = EXCLUDED.state, wrapped_by = EXCLUDED.wrapped_by, object = EXCLUDED.object,
        attributes = EXCLUDED.attributes, attributes_msgpack = EXCLUDED.attributes_msgpack
    WHERE objects.owner = EXCLUDED.owner
    RETURNING uid"""
_UPDATE_OBJECT: Final = """
    UPDATE objects SET wrapped_by = %(wrapped_by)s, object = %(object)s,
        attributes = %(json)s::jsonb, attributes_msgpack = %(msgpack)s
    WHERE uid = %(uid)s"""
_REPLACE_TAGS: Final = """
    WITH dropped AS (DELETE FROM tags WHERE uid = %(uid)s AND tag <> ALL(%(tags)s::text[]))
    INSERT INTO tags (uid, tag) SELECT %(uid)s, unnest(%(tags)s::text[]) ON CONFLICT DO NOTHING"""
_UPDATE_STATE: Final = "UPDATE objects SET state = %s WHERE uid = %s"
_DELETE: Final = """
    WITH grants AS (DELETE FROM permissions WHERE uid = %(uid)s)
    DELETE FROM objects WHERE uid = %(uid)s"""
_RETRIEVE: Final = "SELECT owner, state, object, attributes_msgpack FROM objects WHERE uid = %s"
_RETRIEVE_TAGS: Final = "SELECT tag FROM tags WHERE uid = %s"
_OWNED: Final = "SELECT 1 FROM objects WHERE uid = %s AND owner = %s"
_UIDS_FOR_TAGS: Final = """
    SELECT uid FROM tags WHERE tag = ANY(%s::text[]) GROUP BY uid HAVING count(*) = %s"""
_ACCESS_OWNER: Final = "o.owner = %(user)s"
_ACCESS_GRANTED: Final = """(o.owner = %(user)s
    OR o.uid IN (SELECT p.uid FROM permissions p WHERE p.user_id = %(user)s))"""
_FIND_WRAPPED: Final = f"""
    SELECT o.uid, o.state, o.attributes_msgpack FROM objects o
    WHERE o.wrapped_by = %(kek)s AND {_ACCESS_GRANTED} ORDER BY o.uid"""
_COUNT_LIVE: Final = "SELECT count(*) FROM objects WHERE state <> ALL(%s::text[])"
_GRANT: Final = """
    INSERT INTO permissions (uid, user_id, operations) VALUES (%(uid)s, %(user)s, %(ops)s::text[])
    ON CONFLICT (uid, user_id) DO UPDATE SET operations = ARRAY(
        SELECT DISTINCT op FROM unnest(permissions.operations || EXCLUDED.operations) AS op
        ORDER BY op)"""
_REVOKE_ALL: Final = """
    DELETE FROM permissions
    WHERE uid = %(uid)s AND user_id = %(user)s AND operations <@ %(ops)s::text[]"""
_REVOKE: Final = """
    UPDATE permissions SET operations = ARRAY(
        SELECT op FROM unnest(operations) AS op WHERE op <> ALL(%(ops)s::text[]) ORDER BY op)
    WHERE uid = %(uid)s AND user_id = %(user)s"""
_OBJECT_GRANTS: Final = "SELECT user_id, operations FROM permissions WHERE uid = %s"
_USER_GRANTS: Final = """
    SELECT p.uid, p.operations, o.owner, o.state
    FROM permissions p LEFT JOIN objects o ON o.uid = p.uid WHERE p.user_id = %s"""
_USER_OPERATIONS: Final = """
    SELECT operations FROM permissions WHERE uid = %s AND user_id = ANY(%s::text[])"""
_DUMP_OBJECTS: Final = """
    SELECT o.uid, o.owner, o.state, o.object, o.attributes_msgpack,
        ARRAY(SELECT t.tag FROM tags t WHERE t.uid = o.uid)
    FROM objects o WHERE o.uid > %s ORDER BY o.uid LIMIT %s"""
_DUMP_GRANTS: Final = """
    SELECT uid, user_id, operations FROM permissions
    WHERE (uid, user_id) > (%s, %s) ORDER BY uid, user_id LIMIT %s"""


# -- checking and encoding, in the caller ---------------------------------------------------------


def _name(value: object, what: str) -> str:
    """``value`` if it is a name a store accepts (1 to 250 UTF-8 bytes)."""
    name_bytes(value, what)
    assert isinstance(value, str)
    return value


def _stored_name(value: object, what: str) -> str:
    """``value`` if it is a name this store can write (no NUL, which text cannot hold)."""
    name = _name(value, what)
    if "\x00" in name:
        raise InvalidRequestError(f"{what} holds a NUL character, which PostgreSQL cannot store")
    return name


def _findable(value: object) -> bool:
    """Whether a stored name can equal ``value`` (if not, a lookup finds nothing)."""
    try:
        _stored_name(value, "name")
    except InvalidRequestError:
        return False
    return True


def _tag_list(tags: Iterable[str]) -> list[str]:
    checked = validate_tags(tags)
    for tag in checked:
        _stored_name(tag, "a tag")
    return sorted(checked)


def _operations(operations: Iterable[KmipOperation]) -> list[str]:
    """The operations as their sorted stored names."""
    if isinstance(operations, (str, bytes)):
        raise InvalidRequestError("operations must be a collection of KmipOperation")
    names = set()
    for operation in operations:
        if not isinstance(operation, KmipOperation):
            raise InvalidRequestError(f"{operation!r} is not a KmipOperation")
        names.add(to_name(operation))
    return sorted(names)


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\x00", "\\0")
    if isinstance(value, list):
        return [_escape(item) for item in value]
    if isinstance(value, dict):
        return {_escape(key): _escape(item) for key, item in value.items()}
    return value


def _queryable(attributes: Attributes) -> str:
    """The JSONB form of ``attributes``: Cosmian's JSON, with backslashes and NULs escaped."""
    raw = attributes_to_json(attributes)
    if b"\\u0000" in raw or b"\\\\" in raw:  # only then can escaping change anything
        return json.dumps(_escape(json.loads(raw)), ensure_ascii=False, separators=(",", ":"))
    return raw.decode()


def _search_document(search: Attributes) -> str | None:
    """The JSONB containment document of ``find``'s attribute filters (None: no filter)."""
    fields = {name: getattr(search, name) for name in _FIND_FIELDS}
    fields["link"] = fields["link"] or None  # an empty list asks for nothing
    fields["name"] = fields["name"] or None
    if all(value is None for value in fields.values()):
        return None
    return _queryable(Attributes(**fields))


class _Row:
    """An object and its attributes, checked and encoded by the caller, before any I/O.

    The MessagePack buffers hold key material: ``wipe()`` clears them once the call is over.
    """

    __slots__ = ("attributes", "json", "object", "state", "wrapped_by")

    def __init__(self, obj: object, attributes: object) -> None:
        if not isinstance(obj, OBJECT_TYPES):
            raise InvalidRequestError(f"expected a KMIP object, got {type(obj).__name__}")
        if not isinstance(attributes, Attributes):
            raise InvalidRequestError(f"expected KMIP Attributes, got {type(attributes).__name__}")
        wrapped_by = obj.wrapping_key_uid()
        if wrapped_by is not None:
            _stored_name(wrapped_by, "the wrapping key uid")
        self.json = _queryable(attributes)
        self.attributes = encode_checked(attributes, ATTRIBUTES_CHECK, "KMIP attributes")
        self.object = encode_checked(obj, OBJECT_CHECK, "KMIP object")
        self.state = None if attributes.state is None else State(attributes.state)
        self.wrapped_by = wrapped_by

    def params(self, uid: str) -> dict[str, Any]:
        return {
            "uid": uid,
            "wrapped_by": self.wrapped_by,
            "object": self.object,
            "json": self.json,
            "msgpack": self.attributes,
        }

    def wipe(self) -> None:
        wipe(self.object)
        wipe(self.attributes)


# -- decoding, in the store's thread --------------------------------------------------------------


def _decode_object(raw: bytearray, uid: str) -> Object:
    try:
        obj: Object = kmip_msgpack.decode(OBJECT_CHECK, raw, "stored object")
    except MalformedKmipError as exc:
        raise DbError(f"the stored object {uid!r} is unreadable: {exc.message}") from None
    finally:
        wipe(raw)
    return obj


def _decode_attributes(raw: bytearray, uid: str) -> Attributes:
    try:
        return kmip_msgpack.decode(ATTRIBUTES_CHECK, raw, "stored attributes")
    except MalformedKmipError as exc:
        raise DbError(f"the stored attributes of {uid!r} are unreadable: {exc.message}") from None


def _state(name: str, uid: str) -> State:
    try:
        return State[name]
    except KeyError:
        raise DbError(f"the stored state of {uid!r} is unknown") from None


def _decode_operations(names: list[str]) -> set[KmipOperation]:
    try:
        return {from_name(KmipOperation, name) for name in names}
    except ValueError:
        raise DbError("a stored grant names an unknown operation") from None


class _BufferLoader(Loader):
    """bytea as a ``bytearray``, so that a stored object's bytes can be wiped once decoded."""

    format = Format.BINARY

    def load(self, data: Buffer) -> bytearray:
        return bytearray(data)


# -- the connection, the pool and the retry policy (in the store's event loop thread) ------------


class _Settings:
    """What a store was configured with; ``where`` and ``describe`` never show the password."""

    def __init__(
        self,
        dsn: str,
        pool_size: int,
        statement_timeout: float,
        connect_timeout: float,
    ) -> None:
        if not isinstance(dsn, str):
            raise InvalidRequestError("the PostgreSQL DSN must be a string")
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            # libpq's message may quote the DSN, password included
            raise InvalidRequestError("the PostgreSQL DSN is malformed") from None
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise InvalidRequestError("pool_size must be an int of at least 1")
        for what, value in (
            ("statement_timeout", statement_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidRequestError(f"{what} must be a number of seconds")
            if not 0 < value < math.inf:
                raise InvalidRequestError(f"{what} must be a positive number of seconds")
        self.dsn = dsn
        self.pool_size = pool_size
        self.statement_timeout = float(statement_timeout)
        self.connect_timeout = float(connect_timeout)
        self.watchdog = self.statement_timeout + self.connect_timeout
        password = params.get("password")
        self.password = str(password) if password else None
        self.where = " ".join(
            f"{key}={params.get(key) or '(default)'}" for key in ("host", "port", "dbname", "user")
        )

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(self.connect_timeout)),  # libpq: whole seconds
            "fallback_application_name": "kms_iface",
        }

    def describe(self, exc: BaseException) -> str:
        """A psycopg error as one line, without the password."""
        text = " ".join(str(exc).split()) or type(exc).__name__
        if self.password:
            text = text.replace(self.password, "***")
        return text if len(text) <= 300 else text[:297] + "..."

    def translate(self, exc: psycopg.Error) -> DbError:
        """A psycopg error that is not about the connection, as a ``DbError``."""
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return DbError(
                f"the statement was cancelled (statement timeout {self.statement_timeout:g} s); "
                "nothing was changed"
            )
        code = f" {exc.sqlstate}" if exc.sqlstate else ""
        return DbError(f"PostgreSQL error{code}: {self.describe(exc)}")


def _connection_lost(exc: psycopg.Error, conn: Connection | None) -> bool:
    """Whether ``exc`` means the connection is gone (rather than the statement failed)."""
    if conn is not None and conn.closed:
        return True
    code = exc.sqlstate or ""
    return isinstance(exc, psycopg.OperationalError) and (
        code.startswith("08") or code in _LOST_SQLSTATES
    )


class _Session:
    """One connection lent to a unit of work; every statement runs under the client watchdog."""

    __slots__ = ("conn", "watchdog")

    def __init__(self, conn: Connection, watchdog: float) -> None:
        self.conn = conn
        self.watchdog = watchdog

    async def execute(self, query: str, params: Any = None) -> psycopg.AsyncCursor[TupleRow]:
        async with asyncio.timeout(self.watchdog):
            return await self.conn.execute(query, params, binary=True)

    async def row(self, query: str, params: Any = None) -> TupleRow | None:
        return await (await self.execute(query, params)).fetchone()

    async def rows(self, query: str, params: Any = None) -> list[TupleRow]:
        return await (await self.execute(query, params)).fetchall()

    async def rollback(self) -> None:
        """Roll an open transaction back, if the connection still works."""
        conn = self.conn
        status = conn.pgconn.transaction_status
        if conn.closed or status not in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            return
        with contextlib.suppress(psycopg.Error, TimeoutError):
            await self.execute("ROLLBACK")


Work: TypeAlias = Callable[[_Session], Awaitable[T]]


class _Call(Completion):
    """One call handed to the store's thread; ``task`` is the asyncio task running it there."""

    __slots__ = ("job", "lock", "task", "write")

    def __init__(self, job: Callable[[], Awaitable[Any]], write: bool) -> None:
        super().__init__()
        self.job = job
        self.write = write
        self.lock = threading.Lock()
        self.task: asyncio.Task[None] | None = None


class _Engine:
    """An open store: its asyncio event loop thread and, in that loop, the connection pool."""

    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self.pool: AsyncConnectionPool[Connection] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.checking = False
        self.closing = False  # set by shutdown(), in the loop: calls still queued are refused
        self.stopped = False  # set by stop(): no call may be queued any more
        self.submit_lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._main, name=f"kms-iface-postgres {settings.where}", daemon=True
        )
        self.thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    # -- the callers' side (any thread, any event loop) ----------------------------------------

    async def call(self, job: Callable[[], Awaitable[T]], *, write: bool) -> T:
        """``await job()`` in the store's loop; the caller waits without blocking its own."""
        call = _Call(job, write)
        with self.submit_lock:  # queued before stop(): the loop runs it before it stops
            if self.stopped:
                raise DbError("the store is closed")
            self.loop.call_soon_threadsafe(self._start, call)
        result: T = await call.wait(self._abandon)
        return result

    def _abandon(self, call: _Call) -> bool:
        """On the caller's cancellation: drop a call not started; cancel a running read."""
        with call.lock:
            if call.state == PENDING:
                call.state = ABANDONED
                return True
            task = call.task
        if not call.write and task is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(task.cancel)
        return False

    def stop(self) -> None:
        """Stop the loop (after ``shutdown``); its thread then ends."""
        with self.submit_lock:
            self.stopped = True
            self.loop.call_soon_threadsafe(self.loop.stop)

    # -- the store's thread ----------------------------------------------------------------------

    def _start(self, call: _Call) -> None:
        with call.lock:
            if call.state != PENDING:
                return  # abandoned
            call.state = RUNNING
            task = None if self.closing else self.loop.create_task(self._serve(call))
            call.task = task
        if task is None:
            call.value = DbError("the store is closed")
            deliver([call])
            return
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, call: _Call) -> None:
        try:
            call.value = await call.job()
            call.ok = True
        except asyncio.CancelledError:
            call.value = DbError("the call was cancelled")  # its caller was cancelled first
        except BaseException as exc:
            call.value = exc
        deliver([call])

    async def open(self) -> None:
        """Check (or create) the schema on a connection of its own, then start the pool."""
        settings = self.settings
        try:
            conn = await psycopg.AsyncConnection.connect(settings.dsn, **settings.connect_kwargs())
        except psycopg.Error as exc:
            raise DbConnectionError(
                f"cannot connect to the PostgreSQL server ({settings.where}): "
                f"{settings.describe(exc)}"
            ) from None
        try:
            await self._configure(conn)
            session = _Session(conn, settings.watchdog)
            await session.execute("BEGIN")
            try:
                await self._ensure_schema(session)
                await session.execute("COMMIT")
            except BaseException:
                await session.rollback()
                raise
        except psycopg.Error as exc:
            if _connection_lost(exc, conn):
                raise DbConnectionError(
                    f"lost the connection to the PostgreSQL server ({settings.where}) while "
                    f"checking the schema: {settings.describe(exc)}"
                ) from None
            raise settings.translate(exc) from None
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            settings.dsn,
            kwargs=settings.connect_kwargs(),
            min_size=1,
            max_size=settings.pool_size,
            open=False,
            configure=self._configure,
            name=f"kms_iface {settings.where}",
            timeout=settings.connect_timeout,
            reconnect_timeout=_RECONNECT_WINDOW,
        )
        await pool.open(wait=False)
        self.pool = pool

    async def _configure(self, conn: Connection) -> None:
        """Set up each new connection: timeouts, and bytea read as wipeable buffers."""
        conn.adapters.register_loader("bytea", _BufferLoader)
        milliseconds = str(max(1, round(self.settings.statement_timeout * 1000)))
        await conn.execute(
            "SELECT set_config('statement_timeout', %s, false),"
            " set_config('idle_in_transaction_session_timeout', %s, false)",
            (milliseconds, milliseconds),
        )

    async def _ensure_schema(self, session: _Session) -> None:
        where = self.settings.where
        await session.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        exists = await session.row("SELECT to_regclass('parameters') IS NOT NULL")
        foreign = (
            f"the database ({where}) holds tables that kms_iface did not create: give the store a "
            "database of its own"
        )
        try:
            if exists is None or not exists[0]:
                for statement in _SCHEMA:
                    await session.execute(statement)
                await session.execute(
                    "INSERT INTO parameters (name, value) VALUES ('schema_version', %s)",
                    (str(SCHEMA_VERSION),),
                )
                return
            row = await session.row("SELECT value FROM parameters WHERE name = 'schema_version'")
        except (psycopg.errors.DuplicateTable, psycopg.errors.UndefinedColumn):
            raise DbError(foreign) from None
        if row is None:
            raise DbError(foreign)
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            version = 0
        if version > SCHEMA_VERSION:
            raise DbError(
                f"the database ({where}) has schema version {version}; this kms_iface reads "
                f"schema version {SCHEMA_VERSION} and older: upgrade kms_iface"
            )
        if version < 1:
            raise DbError(f"the database ({where}) has an unreadable schema version")

    async def shutdown(self) -> None:
        """Let the calls in flight finish, then close the pool."""
        self.closing = True
        current = asyncio.current_task()
        pending = [task for task in self.tasks if task is not current]
        if pending:
            await asyncio.wait(pending)
        if self.pool is not None:
            await self.pool.close()

    async def run(self, work: Work[T], *, write: bool) -> T:
        """``work`` on a pooled connection (a write in one transaction), with the retry policy."""
        pool = self.pool
        assert pool is not None
        settings = self.settings
        loop = asyncio.get_running_loop()
        give_up_at: float | None = None
        delay = 0.0
        while True:
            conn: Connection | None = None
            committing = False
            wait = settings.connect_timeout if give_up_at is None else give_up_at - loop.time()
            try:
                async with pool.connection(timeout=max(wait, 0.001)) as conn:
                    session = _Session(conn, settings.watchdog)
                    if not write:
                        return await work(session)
                    await session.execute("BEGIN")
                    try:
                        result = await work(session)
                        committing = True
                        await session.execute("COMMIT")
                    except BaseException:
                        if not committing:
                            await session.rollback()
                        raise
                    return result
            except PoolTimeout:
                raise await self._unreachable() from None
            except PoolClosed:
                raise DbError("the store is closed") from None
            except TimeoutError:
                if committing:
                    raise self._outcome_unknown("no answer to COMMIT") from None
                raise DbConnectionError(
                    f"no answer from the PostgreSQL server ({settings.where}) within "
                    f"{settings.watchdog:g} s; nothing was changed"
                ) from None
            except psycopg.Error as exc:
                if not _connection_lost(exc, conn):
                    raise settings.translate(exc) from None
                reason = settings.describe(exc)
                if committing:
                    raise self._outcome_unknown(reason) from None
                now = loop.time()
                if give_up_at is None:
                    give_up_at = now + settings.connect_timeout
                if now + delay >= give_up_at:
                    raise DbConnectionError(
                        f"lost the connection to the PostgreSQL server ({settings.where}) and "
                        f"could not get it back in {settings.connect_timeout:g} s: {reason}"
                    ) from None
                _log.warning(
                    "PostgreSQL connection lost (%s): %s; retrying in %.2f s",
                    settings.where,
                    reason,
                    delay,
                )
                await self._check(pool)
                await asyncio.sleep(delay)
                delay = min(max(delay * 2, _FIRST_BACKOFF), _MAX_BACKOFF)

    async def _check(self, pool: AsyncConnectionPool[Connection]) -> None:
        """Drop the pooled connections that broke with the one just lost (one check at a time)."""
        if self.checking:
            return
        self.checking = True
        try:
            await pool.check()
        finally:
            self.checking = False

    def _outcome_unknown(self, reason: str) -> DbOutcomeUnknownError:
        _log.error("PostgreSQL connection lost during COMMIT (%s): %s", self.settings.where, reason)
        return DbOutcomeUnknownError(
            f"the connection to the PostgreSQL server ({self.settings.where}) was lost while "
            f"committing: the write may or may not have been applied ({reason})"
        )

    async def _unreachable(self) -> DbConnectionError:
        """Why no pooled connection came: ask the server once directly."""
        settings = self.settings
        try:
            conn = await psycopg.AsyncConnection.connect(settings.dsn, **settings.connect_kwargs())
        except psycopg.Error as exc:
            return DbConnectionError(
                f"cannot connect to the PostgreSQL server ({settings.where}): "
                f"{settings.describe(exc)}"
            )
        await conn.close()
        return DbConnectionError(
            f"no pooled connection became free in {settings.connect_timeout:g} s "
            f"(pool_size={settings.pool_size})"
        )


# -- the store ------------------------------------------------------------------------------------


class PostgresStore(ObjectsStore, PermissionsStore, Dumpable):
    """ObjectsStore + PermissionsStore on the PostgreSQL database named by the libpq ``dsn``.

    ``pool_size``: most connections held open; ``statement_timeout``: longest a statement may
    run on the server (seconds); ``connect_timeout``: longest to connect or wait for a pooled
    connection, and how long connection-level failures are retried. The constructor does no
    I/O (it parses the DSN); ``open()`` creates the schema if the database has none.
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self._settings = _Settings(dsn, pool_size, statement_timeout, connect_timeout)
        self._engine: _Engine | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "closed" if self._engine is None else "open"
        return f"PostgresStore({self._settings.where}, {state})"

    # -- life cycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create or check the schema, start the pool; idempotent."""
        current = self._engine
        if current is not None and current.pid == os.getpid():
            return
        engine = _Engine(self._settings)
        try:
            await engine.call(engine.open, write=True)
        except BaseException:
            await self._stop(engine)
            raise
        with self._lock:
            current = self._engine
            if current is None or current.pid != os.getpid():
                self._engine = engine
                return
        await self._stop(engine)  # another open() won the race

    async def close(self) -> None:
        """Let calls in flight finish, then close the pool; idempotent."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None and engine.pid == os.getpid():
            await self._stop(engine)

    @staticmethod
    async def _stop(engine: _Engine) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await engine.call(engine.shutdown, write=True)
            finally:
                engine.stop()
                await anyio.to_thread.run_sync(engine.thread.join)

    async def _read(self, work: Work[T]) -> T:
        engine = self._open_engine()
        return await engine.call(lambda: engine.run(work, write=False), write=False)

    async def _write(self, work: Work[T]) -> T:
        engine = self._open_engine()
        return await engine.call(lambda: engine.run(work, write=True), write=True)

    def _open_engine(self) -> _Engine:
        engine = self._engine
        if engine is None:
            raise DbError("the store is not open: use `async with store:` or `await store.open()`")
        if engine.pid != os.getpid():
            raise DbError(
                "the store was opened before this process was forked: open a new PostgresStore here"
            )
        return engine

    # -- write steps (in the store's thread, inside a transaction) --------------------------------

    @staticmethod
    async def _insert(
        session: _Session, uid: str, owner: str, state: State, row: _Row, tags: list[str]
    ) -> None:
        params = row.params(uid)
        params.update(owner=owner, state=state.name, tags=tags)
        try:
            await session.execute(_INSERT, params)
        except psycopg.errors.UniqueViolation:
            raise DbError(f"an object with uid {uid!r} already exists") from None

    @staticmethod
    async def _update_object(
        session: _Session, uid: str, row: _Row, tags: list[str] | None
    ) -> None:
        cursor = await session.execute(_UPDATE_OBJECT, row.params(uid))
        if cursor.rowcount and tags is not None:
            await session.execute(_REPLACE_TAGS, {"uid": uid, "tags": tags})

    @staticmethod
    async def _upsert(
        session: _Session, user: str, uid: str, row: _Row, tags: list[str] | None, state: State
    ) -> None:
        params = row.params(uid)
        params.update(owner=user, state=state.name)
        if await session.row(_UPSERT, params) is None:
            raise UnauthorizedError(
                f"object {uid!r} belongs to another user: the upsert is refused and the "
                "batch rolled back"
            )
        if tags is not None:
            await session.execute(_REPLACE_TAGS, {"uid": uid, "tags": tags})

    # -- ObjectsStore ----------------------------------------------------------------------------

    async def create(
        self,
        uid: str | None,
        owner: str,
        object: Object,
        attributes: Attributes,
        tags: Iterable[str],
    ) -> str:
        """Store a new object; ``uid=None`` makes a UUIDv4. An existing uid raises ``DbError``."""
        fresh = _stored_name(new_uid() if uid is None else uid, "uid")
        _stored_name(owner, "owner")
        tag_list = _tag_list(tags)
        row = _Row(object, attributes)
        state = row.state or State.PreActive

        async def write(session: _Session) -> str:
            await self._insert(session, fresh, owner, state, row, tag_list)
            return fresh

        try:
            return await self._write(write)
        finally:
            row.wipe()

    async def retrieve(self, uid: str) -> ObjectWithMetadata | None:
        """The object with owner, stored state and stored attributes, or None."""
        if not _findable(_name(uid, "uid")):
            return None

        async def read(session: _Session) -> ObjectWithMetadata | None:
            found = await session.row(_RETRIEVE, (uid,))
            if found is None:
                return None
            owner, state, obj, attributes = found
            return ObjectWithMetadata(
                uid,
                _decode_object(obj, uid),
                owner,
                _state(state, uid),
                _decode_attributes(attributes, uid),
            )

        return await self._read(read)

    async def retrieve_tags(self, uid: str) -> set[str]:
        """The object's tags (empty for an unknown uid)."""
        if not _findable(_name(uid, "uid")):
            return set()

        async def read(session: _Session) -> set[str]:
            return {tag for (tag,) in await session.rows(_RETRIEVE_TAGS, (uid,))}

        return await self._read(read)

    async def update_object(
        self,
        uid: str,
        object: Object,
        attributes: Attributes,
        tags: Iterable[str] | None = None,
    ) -> None:
        """Replace object and attributes, keep the state; ``tags=None`` keeps the tags."""
        _name(uid, "uid")
        tag_list = None if tags is None else _tag_list(tags)
        row = _Row(object, attributes)
        try:
            if _findable(uid):  # else no such object: nothing to do
                await self._write(lambda session: self._update_object(session, uid, row, tag_list))
        finally:
            row.wipe()

    async def update_state(self, uid: str, state: State) -> None:
        """Change only the stored state (an unknown uid is ignored)."""
        _name(uid, "uid")
        name = check_state(state).name
        if _findable(uid):

            async def write(session: _Session) -> None:
                await session.execute(_UPDATE_STATE, (name, uid))

            await self._write(write)

    async def delete(self, uid: str) -> None:
        """Remove object, tags and permissions; an unknown uid is not an error."""
        if _findable(_name(uid, "uid")):

            async def write(session: _Session) -> None:
                await session.execute(_DELETE, {"uid": uid})

            await self._write(write)

    async def atomic(self, user: str, operations: Sequence[AtomicOperation]) -> list[str]:
        """Apply ``operations`` in order in one all-or-nothing transaction; their uids in order."""
        _stored_name(user, "user")
        if isinstance(operations, (str, bytes)) or not isinstance(operations, Sequence):
            raise InvalidRequestError("operations must be a sequence of atomic operations")
        plan: list[tuple[str, AtomicOperation, _Row | None, list[str] | None]] = []
        try:
            for op in operations:
                plan.append(self._plan(op))
            if not plan:
                return []

            async def write(session: _Session) -> list[str]:
                for uid, op, row, tags in plan:
                    if isinstance(op, UpdateState):
                        await session.execute(_UPDATE_STATE, (op.state.name, uid))
                    elif isinstance(op, Delete):
                        await session.execute(_DELETE, {"uid": uid})
                    elif row is None:
                        raise AssertionError("a write step without its row")
                    elif isinstance(op, Create):
                        state = row.state or State.PreActive
                        await self._insert(session, uid, user, state, row, tags or [])
                    elif isinstance(op, Upsert):
                        await self._upsert(session, user, uid, row, tags, op.state)
                    else:
                        await self._update_object(session, uid, row, tags)
                return [uid for uid, _, _, _ in plan]

            return await self._write(write)
        finally:
            for _, _, row, _ in plan:
                if row is not None:
                    row.wipe()

    @staticmethod
    def _plan(op: object) -> tuple[str, AtomicOperation, _Row | None, list[str] | None]:
        """One checked step of a batch: uid, operation, encoded row, checked tags."""
        check_operation(op, _stored_name)
        if isinstance(op, Create):
            uid = new_uid() if op.uid is None else op.uid
            return uid, op, _Row(op.object, op.attributes), _tag_list(op.tags)
        assert isinstance(op, (Upsert, UpdateObject, UpdateState, Delete))
        if isinstance(op, (UpdateState, Delete)):
            return op.uid, op, None, None
        tags = None if op.tags is None else _tag_list(op.tags)
        return op.uid, op, _Row(op.object, op.attributes), tags

    async def is_object_owned_by(self, uid: str, owner: str) -> bool:
        """Whether ``owner`` is exactly the owner of ``uid``."""
        _name(uid, "uid")
        if not isinstance(owner, str):
            raise InvalidRequestError("owner must be a string")
        if not _findable(uid) or not _findable(owner):
            return False

        async def read(session: _Session) -> bool:
            return await session.row(_OWNED, (uid, owner)) is not None

        return await self._read(read)

    async def list_uids_for_tags(self, tags: Iterable[str]) -> set[str]:
        """The uids having every tag of ``tags`` (at least one tag is required)."""
        wanted = sorted(validate_tags(tags))
        if not wanted:
            raise InvalidRequestError("list_uids_for_tags needs at least one tag")
        if not all(_findable(tag) for tag in wanted):
            return set()

        async def read(session: _Session) -> set[str]:
            return {uid for (uid,) in await session.rows(_UIDS_FOR_TAGS, (wanted, len(wanted)))}

        return await self._read(read)

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
        ObjectType, ApplicationSpecificInformation, every Link and every Name (one JSONB
        containment test); the tags of the ``vendor_id`` tag attribute (all required). Other
        attributes are ignored.
        """
        _name(user, "user")
        if researched_attributes is not None and not isinstance(researched_attributes, Attributes):
            raise InvalidRequestError("researched_attributes must be Attributes or None")
        if state is not None:
            check_state(state)
        search = researched_attributes or Attributes()
        tags = sorted(validate_tags(search.get_tags(vendor_id)))
        uid = search.unique_identifier
        if not _findable(user) or not all(_findable(tag) for tag in tags):
            return []
        if uid is not None and not _findable(uid):
            return []
        params: dict[str, Any] = {"user": user}
        where = [_ACCESS_OWNER if user_must_be_owner else _ACCESS_GRANTED]
        if uid is not None:
            where.append("o.uid = %(uid)s")
            params["uid"] = uid
        if state is not None:
            where.append("o.state = %(state)s")
            params["state"] = state.name
        if tags:
            where.append(
                "o.uid IN (SELECT t.uid FROM tags t WHERE t.tag = ANY(%(tags)s::text[])"
                " GROUP BY t.uid HAVING count(*) = %(tag_count)s)"
            )
            params.update(tags=tags, tag_count=len(tags))
        document = _search_document(search)
        if document is not None:
            where.append("o.attributes @> %(document)s::jsonb")
            params["document"] = document
        query = (
            "SELECT o.uid, o.state, o.attributes_msgpack FROM objects o WHERE "
            + " AND ".join(where)
            + " ORDER BY o.uid"
        )
        return await self._read(lambda session: self._found(session, query, params))

    @staticmethod
    async def _found(session: _Session, query: str, params: Any) -> list[FoundObject]:
        return [
            (uid, _state(state, uid), _decode_attributes(attributes, uid))
            for uid, state, attributes in await session.rows(query, params)
        ]

    async def find_wrapped_by(self, wrapping_key_uid: str, user: str) -> list[FoundObject]:
        """Objects owned by or directly granted to ``user`` wrapped by ``wrapping_key_uid``."""
        if not isinstance(wrapping_key_uid, str):
            raise InvalidRequestError("wrapping_key_uid must be a string")
        _name(user, "user")
        if not _findable(wrapping_key_uid) or not _findable(user):
            return []
        params = {"kek": wrapping_key_uid, "user": user}
        return await self._read(lambda session: self._found(session, _FIND_WRAPPED, params))

    async def count_all_non_destroyed(self) -> int:
        """How many objects are neither Destroyed nor Destroyed_Compromised."""

        async def read(session: _Session) -> int:
            found = await session.row(_COUNT_LIVE, (_DESTROYED,))
            assert found is not None
            count: int = found[0]
            return count

        return await self._read(read)

    # -- PermissionsStore ------------------------------------------------------------------------

    async def list_user_operations_granted(
        self, user: str
    ) -> dict[str, tuple[str, State, set[KmipOperation]]]:
        """``{uid: (owner, state, operations)}`` of the direct grants to ``user``.

        A grant on a missing object reports owner ``""`` and state Active; grants to ``"*"`` are
        not listed for other users.
        """
        if not _findable(_name(user, "user")):
            return {}

        async def read(session: _Session) -> dict[str, tuple[str, State, set[KmipOperation]]]:
            result = {}
            for uid, operations, owner, state in await session.rows(_USER_GRANTS, (user,)):
                if owner is None:
                    result[uid] = ("", State.Active, _decode_operations(operations))
                else:
                    result[uid] = (owner, _state(state, uid), _decode_operations(operations))
            return result

        return await self._read(read)

    async def list_object_operations_granted(self, uid: str) -> dict[str, set[KmipOperation]]:
        """``{user: operations}`` granted on ``uid``."""
        if not _findable(_name(uid, "uid")):
            return {}

        async def read(session: _Session) -> dict[str, set[KmipOperation]]:
            rows = await session.rows(_OBJECT_GRANTS, (uid,))
            return {user: _decode_operations(operations) for user, operations in rows}

        return await self._read(read)

    async def grant_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None:
        """Add ``operations`` to the grant of ``user`` on ``uid`` (the object need not exist)."""
        params = {
            "uid": _stored_name(uid, "uid"),
            "user": _stored_name(user, "user"),
            "ops": _operations(operations),
        }
        if params["ops"]:

            async def write(session: _Session) -> None:
                await session.execute(_GRANT, params)

            await self._write(write)

    async def remove_operations(
        self, uid: str, user: str, operations: Iterable[KmipOperation]
    ) -> None:
        """Remove ``operations`` from the grant; a grant left empty disappears."""
        params = {
            "uid": _name(uid, "uid"),
            "user": _name(user, "user"),
            "ops": _operations(operations),
        }
        if params["ops"] and _findable(uid) and _findable(user):

            async def write(session: _Session) -> None:
                if not (await session.execute(_REVOKE_ALL, params)).rowcount:
                    await session.execute(_REVOKE, params)

            await self._write(write)

    async def list_user_operations_on_object(
        self, uid: str, user: str, no_inherited_access: bool
    ) -> set[KmipOperation]:
        """Direct grants of ``user`` on ``uid``, plus those of ``"*"`` unless told not to."""
        _name(uid, "uid")
        _name(user, "user")
        if not _findable(uid) or not _findable(user):
            return set()
        users = [user] if no_inherited_access or user == WILDCARD_USER else [user, WILDCARD_USER]

        async def read(session: _Session) -> set[KmipOperation]:
            operations: set[KmipOperation] = set()
            for (names,) in await session.rows(_USER_OPERATIONS, (uid, users)):
                operations |= _decode_operations(names)
            return operations

        return await self._read(read)

    # -- Dumpable --------------------------------------------------------------------------------

    async def dump_objects(self, batch: int = 1000) -> AsyncIterator[list[StoredObject]]:
        """Every object (Destroyed ones too), ``batch`` at a time, in uid order.

        Each batch is its own read: a store written to meanwhile is not dumped as one snapshot.
        """
        size = _batch_size(batch)
        after = ""
        while True:
            page = await self._read(functools.partial(self._objects, after=after, size=size))
            if page:
                yield page
            if len(page) < size:
                return
            after = page[-1].uid

    @staticmethod
    async def _objects(session: _Session, after: str, size: int) -> list[StoredObject]:
        return [
            StoredObject(
                uid,
                owner,
                _state(state, uid),
                _decode_object(obj, uid),
                _decode_attributes(attributes, uid),
                frozenset(tags),
            )
            for uid, owner, state, obj, attributes, tags in await session.rows(
                _DUMP_OBJECTS, (after, size)
            )
        ]

    async def dump_grants(self, batch: int = 1000) -> AsyncIterator[list[Grant]]:
        """Every grant, ``batch`` at a time, in (uid, user) order."""
        size = _batch_size(batch)
        after = ("", "")
        while True:
            page = await self._read(functools.partial(self._grants, after=after, size=size))
            if page:
                yield page
            if len(page) < size:
                return
            after = (page[-1].uid, page[-1].user)

    @staticmethod
    async def _grants(session: _Session, after: tuple[str, str], size: int) -> list[Grant]:
        rows = await session.rows(_DUMP_GRANTS, (*after, size))
        return [
            Grant(uid, user, frozenset(_decode_operations(operations)))
            for uid, user, operations in rows
        ]


def _batch_size(batch: object) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidRequestError("batch must be an int of at least 1")
    return batch
