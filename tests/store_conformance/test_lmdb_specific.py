"""What only the LMDB store can be asked: file modes, the format version, a constructor without I/O,
several store objects on one directory in one process."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from kms_iface.errors import DbError
from kms_iface.kmip.enums import State
from kms_iface.stores.lmdb import FORMAT_VERSION, LmdbStore
from tests.store_conformance.model import OWNER, U1, key_attributes, symmetric_key

pytestmark = pytest.mark.anyio


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _read_format_version(path: Path) -> bytes | None:
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            value = txn.get(b"format_version", db=meta)
            return None if value is None else bytes(value)
    finally:
        env.close()


def _write_format_version(path: Path, version: bytes) -> None:
    env = lmdb.open(str(path), max_dbs=16)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            txn.put(b"format_version", version, db=meta)
    finally:
        env.close()


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0 while the test runs: the store must set private modes itself."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


async def test_constructor_does_no_io(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet"
    store = LmdbStore(path)
    assert not (tmp_path / "not").exists()
    await store.close()  # closing a store never opened is a no-op too
    assert not (tmp_path / "not").exists()
    async with store:
        assert path.is_dir()
        assert await store.retrieve("nothing") is None


async def test_files_and_directory_are_private(tmp_path: Path, permissive_umask: None) -> None:
    path = tmp_path / "private"
    async with LmdbStore(path) as store:
        await store.create("x", OWNER, symmetric_key("x"), key_attributes(), {"t"})
        assert _mode(path) == 0o700
        files = [entry for entry in path.rglob("*")]
        assert files, "the store created no file"
        for entry in files:
            expected = 0o700 if entry.is_dir() else 0o600
            assert _mode(entry) == expected, (entry, oct(_mode(entry)))
    for entry in [path, *path.rglob("*")]:
        assert _mode(entry) == (0o700 if entry.is_dir() else 0o600), entry


async def test_format_version_is_recorded_on_creation(tmp_path: Path) -> None:
    path = tmp_path / "versioned"
    async with LmdbStore(path):
        pass
    assert _read_format_version(path) == str(FORMAT_VERSION).encode()


async def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future"
    async with LmdbStore(path) as store:
        await store.create("kept", OWNER, symmetric_key("k"), key_attributes(), {"t"})
    newer = FORMAT_VERSION + 1
    _write_format_version(path, str(newer).encode())

    store = LmdbStore(path)
    with pytest.raises(DbError) as refused:
        await store.open()
    message = str(refused.value).replace(str(path), "<path>")
    assert re.search(rf"(?<!\d){newer}(?!\d)", message), message
    assert re.search(rf"(?<!\d){FORMAT_VERSION}(?!\d)", message), message
    # the refusal changed nothing, and left nothing open behind
    assert _read_format_version(path) == str(newer).encode()
    with pytest.raises(DbError):
        await store.retrieve("kept")
    await store.close()

    _write_format_version(path, str(FORMAT_VERSION).encode())
    async with LmdbStore(path) as store:
        got = await store.retrieve("kept")
        assert got is not None
        assert got.state == State.PreActive
        assert await store.retrieve_tags("kept") == {"t"}


async def test_two_store_objects_on_one_directory(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    first = LmdbStore(path)
    second = LmdbStore(path)
    async with first, second:
        await first.create("one", OWNER, symmetric_key("1"), key_attributes(), {"s"})
        await second.create("two", U1, symmetric_key("2"), key_attributes(), {"s"})
        assert await first.list_uids_for_tags({"s"}) == {"one", "two"}
        await first.close()
        # the other object keeps working after the first one closed
        got = await second.retrieve("one")
        assert got is not None
        assert got.owner == OWNER
        await second.update_state("two", State.Active)
    async with LmdbStore(path) as third:
        got = await third.retrieve("two")
        assert got is not None
        assert got.state == State.Active
