"""A comparison store for benches/store_bench.py: SQLite in Cosmian KMS's schema, JSON records.

Plain synchronous code, one connection per thread, the way Cosmian's SQLite backend lays its data
out: objects and attributes as JSON text, tags and grants in their own tables, attribute searches
through ``json_extract``. It implements only what the benchmark measures (create, a batch of
creates in one transaction, retrieve with decoding, update_state, find by tags and by attributes,
list_uids_for_tags) and is not part of kms_iface.

    objects(id TEXT PRIMARY KEY, object TEXT /*JSON*/, attributes TEXT /*JSON*/, state TEXT,
            owner TEXT)
    tags(id TEXT, tag TEXT, PRIMARY KEY (id, tag))   + index tags(tag) unless tag_index=False
    read_access(id TEXT, userid TEXT, permissions TEXT, PRIMARY KEY (id, userid))

Journal mode WAL; ``synchronous=FULL`` when ``durable`` (every commit survives a power loss, the
comparison for a durable LmdbStore), ``NORMAL`` otherwise. SQLite has one writer at a time:
with ``serialize_writes`` (the default) the threads of this process queue for it on a lock, as
a server with a one-writer pool would; without it, each connection meets the others through
SQLite's busy handler, which sleeps (1, 2, 5, ... 100 ms) and collapses under 32 writers (about 90
creates/s here). Cosmian's schema has no index on
``tags.tag``: ``tag_index=True`` (the default) adds one, a stronger baseline than Cosmian's.

The JSON codec is kms_iface's Cosmian-shaped one (``kms_iface.kmip.json``) when that module is
there, otherwise msgspec's JSON form of the same structs (enumerations as integers, bytes as
base64): ``JSON_CODEC.name`` says which.
"""

from __future__ import annotations

import base64
import importlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import msgspec

from kms_iface.kmip.attributes import Attributes
from kms_iface.kmip.enums import State
from kms_iface.kmip.objects import Object
from kms_iface.secrets import SecretBytes

__all__ = ["JSON_CODEC", "JsonCodec", "SqliteStore", "StoredObject"]

BUSY_TIMEOUT_S: Final = 120.0
SCALAR_FILTERS: Final = (
    "ObjectGroup",
    "ObjectGroupMember",
    "CryptographicAlgorithm",
    "CryptographicLength",
    "KeyFormatType",
    "ObjectType",
)
"""Top-level attributes ``find`` compares with ``json_extract`` (as Cosmian's locate query)."""

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS objects (id TEXT PRIMARY KEY, object TEXT NOT NULL, "
    "attributes TEXT NOT NULL, state TEXT, owner TEXT)",
    "CREATE TABLE IF NOT EXISTS tags (id TEXT, tag TEXT, PRIMARY KEY (id, tag))",
    "CREATE TABLE IF NOT EXISTS read_access (id TEXT, userid TEXT, permissions TEXT, "
    "PRIMARY KEY (id, userid))",
)
TAG_INDEX: Final = "CREATE INDEX IF NOT EXISTS tags_tag ON tags (tag)"

Json = str | bytes


@dataclass(frozen=True)
class JsonCodec:
    """How objects and attributes become JSON text and back."""

    name: str
    object_to_json: Callable[[Object], str]
    object_from_json: Callable[[str], Object]
    attributes_to_json: Callable[[Attributes], str]
    attributes_from_json: Callable[[str], Attributes]


def _text(value: Json) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _kms_iface_codec() -> JsonCodec | None:
    """kms_iface's own JSON codec (Cosmian's JSON shape), if the module exists yet."""
    try:
        module = importlib.import_module("kms_iface.kmip.json")
    except ImportError:
        return None
    names = ("object_to_json", "object_from_json", "attributes_to_json", "attributes_from_json")
    if not all(callable(getattr(module, name, None)) for name in names):
        return None
    obj_to = cast(Callable[[Object], Json], module.object_to_json)
    attrs_to = cast(Callable[[Attributes], Json], module.attributes_to_json)
    return JsonCodec(
        name="kms_iface.kmip.json (Cosmian's JSON shape)",
        object_to_json=lambda obj: _text(obj_to(obj)),
        object_from_json=cast(Callable[[str], Object], module.object_from_json),
        attributes_to_json=lambda attrs: _text(attrs_to(attrs)),
        attributes_from_json=cast(Callable[[str], Attributes], module.attributes_from_json),
    )


def _enc_hook(value: Any) -> Any:
    if isinstance(value, SecretBytes):
        return bytes(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def _dec_hook(kind: type, value: Any) -> Any:
    if kind is SecretBytes and isinstance(value, str):
        return SecretBytes(base64.b64decode(value))
    raise NotImplementedError(f"cannot decode {kind.__name__}")


def _msgspec_codec() -> JsonCodec:
    """msgspec's JSON form of the kms_iface structs: not Cosmian's shape, same information."""
    encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
    objects = msgspec.json.Decoder(Object, dec_hook=_dec_hook)
    attributes = msgspec.json.Decoder(Attributes, dec_hook=_dec_hook)
    return JsonCodec(
        name="msgspec JSON of the structs (kms_iface.kmip.json not available)",
        object_to_json=lambda obj: encoder.encode(obj).decode(),
        object_from_json=objects.decode,
        attributes_to_json=lambda attrs: encoder.encode(attrs).decode(),
        attributes_from_json=attributes.decode,
    )


def json_codec() -> JsonCodec:
    """kms_iface.kmip.json when present, else msgspec JSON."""
    return _kms_iface_codec() or _msgspec_codec()


JSON_CODEC: Final = json_codec()


class StoredObject(msgspec.Struct, frozen=True):
    """What ``retrieve`` gives back (the fields of kms_iface's ObjectWithMetadata)."""

    id: str
    object: Object
    owner: str
    state: State
    attributes: Attributes


Item = tuple[str, Object, Attributes, Iterable[str]]
"""One object to create: uid, object, attributes, tags."""


class SqliteStore:
    """The comparison store; thread-safe (one connection per thread), every method blocking."""

    def __init__(
        self,
        path: str | Path,
        *,
        durable: bool = True,
        tag_index: bool = True,
        serialize_writes: bool = True,
        codec: JsonCodec = JSON_CODEC,
    ) -> None:
        self.path = str(path)
        self.durable = durable
        self._write_lock: threading.Lock | None = threading.Lock() if serialize_writes else None
        self.codec = codec
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        for statement in SCHEMA + ((TAG_INDEX,) if tag_index else ()):
            conn.execute(statement)

    # -- plumbing ------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        lock = self._write_lock
        if lock is None:
            with self._transaction() as conn:
                yield conn
        else:
            with lock, self._transaction() as conn:
                yield conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _insert(self, conn: sqlite3.Connection, owner: str, item: Item) -> str:
        uid, obj, attributes, tags = item
        state = attributes.state if attributes.state is not None else State.PreActive
        conn.execute(
            "INSERT INTO objects (id, object, attributes, state, owner) VALUES (?, ?, ?, ?, ?)",
            (
                uid,
                self.codec.object_to_json(obj),
                self.codec.attributes_to_json(attributes),
                state.name,
                owner,
            ),
        )
        conn.executemany("INSERT INTO tags (id, tag) VALUES (?, ?)", [(uid, t) for t in tags])
        return uid

    # -- the operations ------------------------------------------------------------------------

    def create(
        self, uid: str, owner: str, obj: Object, attributes: Attributes, tags: Iterable[str]
    ) -> str:
        """Insert one object and its tags in one transaction (an existing uid raises)."""
        with self._write() as conn:
            return self._insert(conn, owner, (uid, obj, attributes, tags))

    def create_many(self, owner: str, items: Sequence[Item]) -> list[str]:
        """Insert every item in one transaction (all or nothing)."""
        with self._write() as conn:
            return [self._insert(conn, owner, item) for item in items]

    def retrieve(self, uid: str) -> StoredObject | None:
        """The object with its owner, state and attributes, decoded; None if unknown."""
        row = (
            self._conn()
            .execute("SELECT object, attributes, state, owner FROM objects WHERE id = ?", (uid,))
            .fetchone()
        )
        if row is None:
            return None
        obj, attributes, state, owner = row
        return StoredObject(
            uid,
            self.codec.object_from_json(obj),
            owner,
            State[state],
            self.codec.attributes_from_json(attributes),
        )

    def update_state(self, uid: str, state: State) -> None:
        """Change the stored state only."""
        with self._write() as conn:
            conn.execute("UPDATE objects SET state = ? WHERE id = ?", (state.name, uid))

    def list_uids_for_tags(self, tags: Iterable[str]) -> set[str]:
        """The uids having every one of ``tags``."""
        wanted = sorted(set(tags))
        marks = ", ".join("?" * len(wanted))
        rows = (
            self._conn()
            .execute(
                f"SELECT id FROM tags WHERE tag IN ({marks}) GROUP BY id "
                "HAVING COUNT(DISTINCT tag) = ?",
                (*wanted, len(wanted)),
            )
            .fetchall()
        )
        return {uid for (uid,) in rows}

    def find(
        self,
        researched_attributes: Attributes | None,
        state: State | None,
        user: str,
        user_must_be_owner: bool,
        vendor_id: str = "cosmian",
    ) -> list[tuple[str, State, Attributes]]:
        """Cosmian's locate query: owner (or grant), state, tags, then json_extract filters.

        Filters: UniqueIdentifier, the SCALAR_FILTERS, every Name and every Link (the fields
        given in the search must all match one element); tags from the ``vendor_id`` tag
        attribute, all required. ApplicationSpecificInformation is not implemented here.
        """
        sql = ["SELECT objects.id, objects.state, objects.attributes FROM objects"]
        params: list[object] = []
        search = researched_attributes or Attributes()
        tags = sorted(search.get_tags(vendor_id))
        if tags:
            marks = ", ".join("?" * len(tags))
            sql.append(
                f"JOIN (SELECT id FROM tags WHERE tag IN ({marks}) GROUP BY id "
                "HAVING COUNT(DISTINCT tag) = ?) AS matched ON objects.id = matched.id"
            )
            params += [*tags, len(tags)]
        if user_must_be_owner:
            sql.append("WHERE objects.owner = ?")
            params.append(user)
        else:
            sql.append(
                "LEFT JOIN read_access ON objects.id = read_access.id AND read_access.userid = ?"
                " WHERE (objects.owner = ? OR read_access.userid = ?)"
            )
            params += [user, user, user]
        if state is not None:
            sql.append("AND objects.state = ?")
            params.append(state.name)
        if search.unique_identifier is not None:
            sql.append("AND objects.id = ?")
            params.append(search.unique_identifier)
        wanted: dict[str, Any] = msgspec.json.decode(self.codec.attributes_to_json(search))
        for key in SCALAR_FILTERS:
            if key in wanted:
                sql.append(f"AND json_extract(objects.attributes, '$.{key}') = ?")
                params.append(wanted[key])
        for key in ("Name", "Link"):
            for element in wanted.get(key, ()):
                checks = " AND ".join(
                    f"json_extract(e.value, '$.{field}') = ?" for field in element
                )
                sql.append(
                    f"AND EXISTS (SELECT 1 FROM json_each(objects.attributes, '$.{key}') AS e "
                    f"WHERE {checks})"
                )
                params += list(element.values())
        rows = self._conn().execute(" ".join(sql), params).fetchall()
        decode = self.codec.attributes_from_json
        return [(uid, State[name], decode(attributes)) for uid, name, attributes in rows]
