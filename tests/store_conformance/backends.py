"""The registry of store backends the conformance suite runs against.

A backend is described by a ``Backend`` entry:

- ``name``: the test id (``test_round_trip[lmdb-asyncio]``) and the name the helper processes
  (``_writer.py``) are given on their command line;
- ``new_descriptor(tmp_path)``: an async function that prepares a FRESH, EMPTY store location for
  one test and returns its *descriptor*, a plain ``str`` (picklable, printable, passable on a
  command line) that names that store; for LMDB it is the store directory;
- ``make_store(descriptor)``: builds an unopened store object for the descriptor (no I/O); any
  process (the test process, a writer subprocess, a reopened store) gets at the same store this
  way;
- ``discard(descriptor)``: an async function undoing ``new_descriptor`` after the test (LMDB:
  nothing, pytest removes ``tmp_path``).

``open_store(name, descriptor)`` opens the store of a descriptor (``async with``), from this
process or from another one.

Registered: ``lmdb`` (an ``LmdbStore``; the descriptor is its directory), ``router`` (the uid
router ``kms_iface.Database`` with only its default store, one ``LmdbStore`` serving as both
objects and permissions store; same descriptor), so that the router is held to the whole contract,
and ``postgres`` (a ``PostgresStore``; the descriptor is the DSN of a fresh database, cloned from
a template holding the schema on the session's private cluster, ``tests/postgres_cluster.py``,
started on first use; dropped after the test).

Adding a backend is one more entry in ``BACKENDS``, registered unconditionally (a missing server
must fail the run, not skip it silently). The LMDB-only checks (file modes, format version,
constructor without I/O) live in ``test_lmdb_specific.py``, the PostgreSQL-only ones in
``tests/test_postgres_store.py``; every other test runs against every entry.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import anyio
import anyio.to_thread

from kms_iface.stores.base import ObjectsStore, PermissionsStore

__all__ = ["BACKENDS", "Backend", "Store", "get_backend", "open_store"]


class Store(ObjectsStore, PermissionsStore):
    """The static type of a store under test: both contracts on one object (never instantiated)."""


async def _nothing(descriptor: str) -> None:
    del descriptor


@dataclass(frozen=True)
class Backend:
    """One store backend under test (see the module docstring)."""

    name: str
    new_descriptor: Callable[[Path], Awaitable[str]]
    make_store: Callable[[str], Store]
    discard: Callable[[str], Awaitable[None]] = _nothing


async def _lmdb_descriptor(tmp_path: Path) -> str:
    # A directory that does not exist yet: the store creates it (mode 0700) when it opens.
    return str(tmp_path / "lmdb-store")


def _lmdb_store(descriptor: str) -> Store:
    from kms_iface.stores.lmdb import LmdbStore

    return cast(Store, LmdbStore(descriptor))


def _router_store(descriptor: str) -> Store:
    # The uid router with only its default store: one LmdbStore for objects and permissions.
    from kms_iface.database import Database
    from kms_iface.stores.lmdb import LmdbStore

    store = LmdbStore(descriptor)
    return cast(Store, Database(store, store))


async def _postgres_descriptor(tmp_path: Path) -> str:
    from tests.postgres_cluster import new_database

    return await anyio.to_thread.run_sync(new_database)


async def _postgres_discard(descriptor: str) -> None:
    from tests.postgres_cluster import drop_database

    await anyio.to_thread.run_sync(drop_database, descriptor)


def _postgres_store(descriptor: str) -> Store:
    from kms_iface.stores.postgres import PostgresStore

    return cast(Store, PostgresStore(descriptor, pool_size=4))


BACKENDS: list[Backend] = [
    Backend("lmdb", _lmdb_descriptor, _lmdb_store),
    Backend("router", _lmdb_descriptor, _router_store),
    Backend("postgres", _postgres_descriptor, _postgres_store, _postgres_discard),
]


def get_backend(name: str) -> Backend:
    """The registered backend called ``name``."""
    for backend in BACKENDS:
        if backend.name == name:
            return backend
    raise KeyError(f"no store backend called {name!r} (known: {[b.name for b in BACKENDS]})")


@contextlib.asynccontextmanager
async def open_store(name: str, descriptor: str) -> AsyncIterator[Store]:
    """Open the store ``descriptor`` of backend ``name`` (in this or any other process)."""
    store = get_backend(name).make_store(descriptor)
    async with store:
        yield store
