"""Store benchmark: kms_iface's LmdbStore against raw LMDB and a SQLite store, in one run.

Every object is the same kind of record: an AES-256 SymmetricKey built as Cosmian builds one
(``symmetric_key_object``), with a Name, an ObjectGroup, its UniqueIdentifier, three tags and a
Description padded so that the object's MessagePack is about 1 KiB; the stored attributes are the
object's embedded ones. Three implementations get the same objects in the same order:

- ``kms_iface LmdbStore``: ``kms_iface.stores.lmdb.LmdbStore(durable=True)`` through its async API;
- ``raw LMDB``: py-lmdb with sync and metasync on, one write transaction per put (or per batch),
  storing under the uid a record with LmdbStore's fields (``[uid, owner, state, wrapped_by,
  object, attributes]`` as MessagePack, LmdbStore's record layout when this was written), and
  for reads one ``get`` + msgspec decode of those bytes: the ceiling a store on LMDB can approach
  for reads (it keeps no tag, owner or other index);
- ``SQLite``: benches/sqlite_store.py, Cosmian's schema with JSON text, WAL, synchronous=FULL;
- ``kms_iface PostgresStore``: ``kms_iface.stores.postgres.PostgresStore`` on a private
  PostgreSQL cluster on the loopback (``tests/postgres_cluster.py`` with ``durable=True``: fsync
  and full_page_writes on, as a production server), 32 pooled connections: the price of a store
  that several servers share, one network round trip (or several, for a write) per call.

Writes (durable, each acknowledged write survives a power loss): creates one at a time; creates
from 32 concurrent tasks (LmdbStore: asyncio tasks sharing group commits; raw LMDB and SQLite:
32 threads, one transaction per create); batches of 100 creates in one transaction
(LmdbStore ``atomic``). They run in rounds: each round gives every implementation the next chunk
of objects for each kind of write, rotating the order of the implementations by one each round.
Then the stores are filled to ``--objects`` (batches of 1,000) and the reads and small writes run
as interleaved timed bursts, as `kms-iface bench` does: per round one burst per implementation, the
order rotating. Ratios are medians of per-round ratios, which cancels most of the machine's drift;
ops/s are each implementation's median round.

    python benches/store_bench.py [--objects 100000] [--quick] [--writes 10000]
                                  [--write-rounds 10] [--rounds 15] [--duration 0.1]
                                  [--dir DIR] [--sqlite-no-tag-index] [--sqlite-busy-wait]
                                  [--json FILE]

stdout gets the Markdown table and the two target ratios; progress goes to stderr. Everything is
written in a temporary directory (under ``--dir``, default the system's) removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import anyio
import lmdb
import msgspec
from sqlite_store import JSON_CODEC, SqliteStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.postgres_cluster

from kms_iface.kmip import msgpack as kmip_msgpack
from kms_iface.kmip.attributes import Attributes, Name
from kms_iface.kmip.enums import CryptographicAlgorithm, ObjectType, State
from kms_iface.kmip.objects import Object, symmetric_key_object
from kms_iface.stores.base import Create
from kms_iface.stores.lmdb import LmdbStore
from kms_iface.stores.postgres import PostgresStore
from tests.postgres_cluster import PostgresCluster

STORE: Final = "kms_iface LmdbStore"
RAW: Final = "raw LMDB"
SQLITE: Final = "SQLite"
PG: Final = "kms_iface PostgresStore"
IMPLS: Final = (STORE, RAW, SQLITE, PG)

OWNER: Final = "bench-owner@example.org"
VENDOR: Final = "cosmian"
TARGET_OBJECT_BYTES: Final = 1024
GROUP_SIZE: Final = 10  # objects per tag group and per ObjectGroup
CONCURRENCY: Final = 32
BATCH: Final = 100
FILL_BATCH: Final = 1000
MAP_SIZE: Final = 16 << 30
MIN_ROUNDS: Final = 3
GROUP_COMMIT_TARGET: Final = 10.0
RETRIEVE_TARGET: Final = 0.8
STATES: Final = (State.Active, State.Deactivated)


class RawRecord(msgspec.Struct, array_like=True):
    """The record LmdbStore keeps for each object, decoded in full (what ``retrieve`` needs)."""

    uid: str
    owner: str
    state: str
    wrapped_by: str | None
    object: Object
    attributes: Attributes


class RawHeader(msgspec.Struct, array_like=True):
    """The same record with object and attributes left encoded (enough to change the state)."""

    uid: str
    owner: str
    state: str
    wrapped_by: str | None
    object: msgspec.Raw
    attributes: msgspec.Raw


ENCODER: Final = kmip_msgpack.encoder()
RECORD_DECODER: Final = kmip_msgpack.decoder(RawRecord)
HEADER_DECODER: Final = msgspec.msgpack.Decoder(RawHeader)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the objects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One object to create, with the uid, attributes and tags every implementation gets."""

    index: int
    uid: str
    obj: Object
    attributes: Attributes
    tags: frozenset[str]


class Corpus:
    """The ``total`` objects of the run, made on demand from their index (deterministic)."""

    def __init__(self, total: int, seed: int = 20241129) -> None:
        rng = random.Random(seed)
        self.total = total
        self.groups = max(1, total // GROUP_SIZE)
        self.uids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(total)]
        self.padding = ""
        self.padding = self._padding()

    def group(self, index: int) -> int:
        return index % self.groups

    def group_members(self, group: int) -> int:
        """How many objects are in ``group`` once all ``total`` are stored."""
        return self.total // self.groups + (1 if group < self.total % self.groups else 0)

    def item(self, index: int) -> Item:
        group = self.group(index)
        uid = self.uids[index]
        attributes = Attributes(
            name=[Name(name_value=f"bench-key-{index:07d}")],
            object_group=f"og-{group:06d}",
            unique_identifier=uid,
            description=self.padding or None,
        )
        key = random.Random(index).randbytes(32)
        obj = symmetric_key_object(key, attributes, VENDOR, tags=("bench", f"grp-{group:06d}"))
        embedded = obj.attributes()
        assert embedded is not None
        return Item(index, uid, obj, embedded, frozenset(embedded.get_tags(VENDOR)))

    def items(self, start: int, stop: int) -> list[Item]:
        return [self.item(index) for index in range(start, stop)]

    def _padding(self) -> str:
        """A Description long enough to bring the object's MessagePack to ~TARGET_OBJECT_BYTES."""
        text = "padding to reach about one KiB of MessagePack per object; "
        length = 0
        for _ in range(4):
            self.padding = (text * 40)[:length]
            size = len(kmip_msgpack.object_to_msgpack(self.item(0).obj))
            if size == TARGET_OBJECT_BYTES or (length == 0 and size > TARGET_OBJECT_BYTES):
                break
            length = max(0, length + TARGET_OBJECT_BYTES - size - (14 if length == 0 else 0))
        return self.padding

    def record(self, item: Item) -> bytes:
        """The record bytes raw LMDB writes (the layout LmdbStore writes)."""
        state = item.attributes.state or State.PreActive
        record = RawRecord(item.uid, OWNER, state.name, None, item.obj, item.attributes)
        return ENCODER.encode(record)


def chunks(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- the three implementations --------------------------------------------------------------------

WriteOp = Callable[[Sequence[Item]], Awaitable[None]]


@dataclass(frozen=True)
class ReadOp:
    """One implementation's timed call for a read row: ``op(i)`` does call number i."""

    sync: Callable[[int], object] | None = None
    aio: Callable[[int], Awaitable[object]] | None = None

    async def __call__(self, index: int) -> object:
        if self.aio is not None:
            return await self.aio(index)
        assert self.sync is not None
        return self.sync(index)


class Threads:
    """A persistent pool of CONCURRENCY threads (SQLite keeps one connection per thread)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="bench")

    def drain(self, work: Callable[[Item], object], items: Sequence[Item]) -> None:
        """Run ``work`` over ``items`` from CONCURRENCY threads at once."""
        source = iter(items)
        lock = threading.Lock()

        def run() -> None:
            while True:
                with lock:
                    item = next(source, None)
                if item is None:
                    return
                work(item)

        for future in [self.pool.submit(run) for _ in range(CONCURRENCY)]:
            future.result()

    def close(self) -> None:
        self.pool.shutdown()


class Bench:
    """The three stores in one temporary directory, and each implementation's operations."""

    def __init__(self, directory: Path, corpus: Corpus, settings: Settings) -> None:
        self.corpus = corpus
        self.store = LmdbStore(directory / "lmdb-store", map_size=MAP_SIZE, durable=True)
        self.env = lmdb.open(
            str(directory / "raw-lmdb"),
            map_size=MAP_SIZE,
            subdir=True,
            sync=True,
            metasync=True,
            readahead=False,
        )
        self.sqlite = SqliteStore(
            directory / "sqlite.db",
            durable=True,
            tag_index=settings.tag_index,
            serialize_writes=not settings.sqlite_busy_wait,
        )
        self.threads = Threads()
        self.cluster = PostgresCluster(durable=True)
        self.cluster.start()
        self.pg = PostgresStore(self.cluster.create_database("kms_bench"), pool_size=CONCURRENCY)

    async def close(self) -> None:
        await self.store.close()
        await self.pg.close()
        self.cluster.destroy()
        self.env.close()
        self.sqlite.close()
        self.threads.close()

    # -- writes ----------------------------------------------------------------------------------

    async def store_create(self, item: Item) -> None:
        await self.store.create(item.uid, OWNER, item.obj, item.attributes, item.tags)

    def raw_put(self, item: Item) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(item.uid.encode(), self.corpus.record(item), overwrite=False)

    def raw_put_many(self, items: Sequence[Item]) -> None:
        with self.env.begin(write=True) as txn:
            for item in items:
                txn.put(item.uid.encode(), self.corpus.record(item), overwrite=False)

    def sqlite_create(self, item: Item) -> None:
        self.sqlite.create(item.uid, OWNER, item.obj, item.attributes, item.tags)

    def sqlite_create_many(self, items: Sequence[Item]) -> None:
        self.sqlite.create_many(
            OWNER, [(item.uid, item.obj, item.attributes, item.tags) for item in items]
        )

    async def store_atomic(
        self, items: Sequence[Item], store: LmdbStore | PostgresStore | None = None
    ) -> None:
        creates = [Create(item.uid, item.obj, item.attributes, item.tags) for item in items]
        await (store or self.store).atomic(OWNER, creates)

    async def pg_create(self, item: Item) -> None:
        await self.pg.create(item.uid, OWNER, item.obj, item.attributes, item.tags)

    def write_ops(self) -> dict[str, dict[str, WriteOp]]:
        """Per write row, each implementation's way to write a chunk of items."""

        async def store_single(items: Sequence[Item]) -> None:
            for item in items:
                await self.store_create(item)

        async def store_concurrent(items: Sequence[Item]) -> None:
            source = iter(items)

            async def task() -> None:
                for item in source:
                    await self.store_create(item)

            async with anyio.create_task_group() as group:
                for _ in range(CONCURRENCY):
                    group.start_soon(task)

        async def store_batches(items: Sequence[Item]) -> None:
            for chunk in chunks(items, BATCH):
                await self.store_atomic(chunk)

        async def raw_single(items: Sequence[Item]) -> None:
            for item in items:
                self.raw_put(item)

        async def raw_concurrent(items: Sequence[Item]) -> None:
            self.threads.drain(self.raw_put, items)

        async def raw_batches(items: Sequence[Item]) -> None:
            for chunk in chunks(items, BATCH):
                self.raw_put_many(chunk)

        async def sqlite_single(items: Sequence[Item]) -> None:
            for item in items:
                self.sqlite_create(item)

        async def sqlite_concurrent(items: Sequence[Item]) -> None:
            self.threads.drain(self.sqlite_create, items)

        async def sqlite_batches(items: Sequence[Item]) -> None:
            for chunk in chunks(items, BATCH):
                self.sqlite_create_many(chunk)

        async def pg_single(items: Sequence[Item]) -> None:
            for item in items:
                await self.pg_create(item)

        async def pg_concurrent(items: Sequence[Item]) -> None:
            source = iter(items)

            async def task() -> None:
                for item in source:
                    await self.pg_create(item)

            async with anyio.create_task_group() as group:
                for _ in range(CONCURRENCY):
                    group.start_soon(task)

        async def pg_batches(items: Sequence[Item]) -> None:
            for chunk in chunks(items, BATCH):
                await self.store_atomic(chunk, self.pg)

        return {
            ROW_SINGLE: {
                STORE: store_single,
                RAW: raw_single,
                SQLITE: sqlite_single,
                PG: pg_single,
            },
            ROW_CONCURRENT: {
                STORE: store_concurrent,
                RAW: raw_concurrent,
                SQLITE: sqlite_concurrent,
                PG: pg_concurrent,
            },
            ROW_BATCH: {
                STORE: store_batches,
                RAW: raw_batches,
                SQLITE: sqlite_batches,
                PG: pg_batches,
            },
        }

    async def fill(self, items: Sequence[Item]) -> None:
        """Store ``items`` in every store, FILL_BATCH per transaction (not measured)."""
        for chunk in chunks(items, FILL_BATCH):
            await self.store_atomic(chunk)
            await self.store_atomic(chunk, self.pg)
            self.raw_put_many(chunk)
            self.sqlite_create_many(chunk)

    # -- reads and small writes ------------------------------------------------------------------

    def read_rows(self, rng: random.Random) -> list[ReadRow]:
        corpus = self.corpus
        probes = [corpus.uids[i] for i in rng.sample(range(corpus.total), corpus.total)]
        updates = probes[::-1]
        groups = [rng.randrange(corpus.groups) for _ in range(4096)]
        tag_queries = []
        for group in groups:
            query = Attributes()
            query.set_tags(VENDOR, {f"grp-{group:06d}"})
            tag_queries.append(query)
        attribute_queries = [
            Attributes(
                object_group=f"og-{group:06d}",
                cryptographic_algorithm=CryptographicAlgorithm.AES,
                object_type=ObjectType.SymmetricKey,
            )
            for group in groups
        ]
        tag_sets = [{f"grp-{group:06d}"} for group in groups]

        def probe(i: int) -> str:
            return probes[i % len(probes)]

        def update(i: int) -> tuple[str, State]:
            return updates[i % len(updates)], STATES[(i // len(updates)) % 2]

        def raw_get(i: int) -> RawRecord:
            with self.env.begin(buffers=True) as txn:
                raw = txn.get(probe(i).encode())
                if raw is None:
                    raise BenchError(f"raw LMDB lost {probe(i)!r}")
                return RECORD_DECODER.decode(raw)

        def raw_update_state(i: int) -> None:
            uid, state = update(i)
            key = uid.encode()
            with self.env.begin(write=True) as txn:
                raw = txn.get(key)
                if raw is None:
                    raise BenchError(f"raw LMDB lost {uid!r}")
                header = HEADER_DECODER.decode(raw)
                header.state = state.name
                txn.put(key, ENCODER.encode(header))

        def sqlite_update_state(i: int) -> None:
            self.sqlite.update_state(*update(i))

        async def store_update_state(i: int) -> None:
            await self.store.update_state(*update(i))

        def group_of(i: int) -> int:
            return groups[i % len(groups)]

        return [
            ReadRow(
                "retrieve (get + decode)",
                {
                    STORE: ReadOp(aio=lambda i: self.store.retrieve(probe(i))),
                    RAW: ReadOp(sync=raw_get),
                    SQLITE: ReadOp(sync=lambda i: self.sqlite.retrieve(probe(i))),
                    PG: ReadOp(aio=lambda i: self.pg.retrieve(probe(i))),
                },
                check=lambda i, result: _check_retrieve(corpus, probe(i), result),
            ),
            ReadRow(
                "update_state (durable, 1 at a time)",
                {
                    STORE: ReadOp(aio=store_update_state),
                    RAW: ReadOp(sync=raw_update_state),
                    SQLITE: ReadOp(sync=sqlite_update_state),
                    PG: ReadOp(aio=lambda i: self.pg.update_state(*update(i))),
                },
            ),
            ReadRow(
                f"find by tag ({GROUP_SIZE} hits)",
                {
                    STORE: ReadOp(
                        aio=lambda i: self.store.find(
                            tag_queries[i % len(groups)], None, OWNER, True, VENDOR
                        )
                    ),
                    SQLITE: ReadOp(
                        sync=lambda i: self.sqlite.find(
                            tag_queries[i % len(groups)], None, OWNER, True, VENDOR
                        )
                    ),
                    PG: ReadOp(
                        aio=lambda i: self.pg.find(
                            tag_queries[i % len(groups)], None, OWNER, True, VENDOR
                        )
                    ),
                },
                check=lambda i, result: _check_count(corpus, group_of(i), result),
            ),
            ReadRow(
                f"find by attributes ({GROUP_SIZE} hits)",
                {
                    STORE: ReadOp(
                        aio=lambda i: self.store.find(
                            attribute_queries[i % len(groups)], None, OWNER, True, VENDOR
                        )
                    ),
                    SQLITE: ReadOp(
                        sync=lambda i: self.sqlite.find(
                            attribute_queries[i % len(groups)], None, OWNER, True, VENDOR
                        )
                    ),
                    PG: ReadOp(
                        aio=lambda i: self.pg.find(
                            attribute_queries[i % len(groups)], None, OWNER, True, VENDOR
                        )
                    ),
                },
                check=lambda i, result: _check_count(corpus, group_of(i), result),
            ),
            ReadRow(
                f"list_uids_for_tags ({GROUP_SIZE} hits)",
                {
                    STORE: ReadOp(
                        aio=lambda i: self.store.list_uids_for_tags(tag_sets[i % len(groups)])
                    ),
                    SQLITE: ReadOp(
                        sync=lambda i: self.sqlite.list_uids_for_tags(tag_sets[i % len(groups)])
                    ),
                    PG: ReadOp(aio=lambda i: self.pg.list_uids_for_tags(tag_sets[i % len(groups)])),
                },
                check=lambda i, result: _check_count(corpus, group_of(i), result),
            ),
        ]


class BenchError(Exception):
    """A store gave a wrong answer."""


def _check_retrieve(corpus: Corpus, uid: str, result: object) -> None:
    expected = corpus.item(corpus.uids.index(uid))
    got = getattr(result, "object", None)
    if got != expected.obj or getattr(result, "attributes", None) != expected.attributes:
        raise BenchError(f"retrieve({uid!r}) did not give back the stored object")


def _check_count(corpus: Corpus, group: int, result: object) -> None:
    want = corpus.group_members(group)
    got = len(result) if isinstance(result, list | set) else -1
    if got != want:
        raise BenchError(f"group {group}: {got} results, expected {want}")


# -- measuring ------------------------------------------------------------------------------------

ROW_SINGLE: Final = "create, 1 at a time (durable)"
ROW_CONCURRENT: Final = f"create, {CONCURRENCY} concurrent (durable)"
ROW_BATCH: Final = f"create, batches of {BATCH} (durable)"


@dataclass
class ReadRow:
    label: str
    ops: dict[str, ReadOp]
    check: Callable[[int, object], None] | None = None


@dataclass
class Results:
    """Per (row, implementation): ops/s of every round, in round order."""

    rows: list[str] = field(default_factory=list)
    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    rounds: dict[str, int] = field(default_factory=dict)

    def add(self, row: str, impl: str, rate: float) -> None:
        if row not in self.rows:
            self.rows.append(row)
        self.rates.setdefault((row, impl), []).append(rate)

    def median(self, row: str, impl: str) -> float | None:
        rates = self.rates.get((row, impl))
        return statistics.median(rates) if rates else None

    def round_ratios(
        self, row: str, impl: str, other: str, other_row: str | None = None
    ) -> list[float]:
        """Per round: impl's rate / other's rate of the same round."""
        mine = self.rates.get((row, impl))
        theirs = self.rates.get((other_row or row, other))
        if not mine or not theirs:
            return []
        return [a / b for a, b in zip(mine, theirs, strict=True)]

    def ratio(self, row: str, impl: str, other: str, other_row: str | None = None) -> float | None:
        """Median over the rounds of (impl's round / other's same round)."""
        ratios = self.round_ratios(row, impl, other, other_row)
        return statistics.median(ratios) if ratios else None

    def spread(self, row: str, impl: str, other: str) -> float | None:
        """The interquartile range of the per-round ratios, in % of their median."""
        ratios = self.round_ratios(row, impl, other)
        if len(ratios) < 2:
            return None
        low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
        return 100 * (high - low) / statistics.median(ratios)


async def measure_writes(bench: Bench, settings: Settings, results: Results) -> int:
    """The write rows in rounds; returns how many corpus objects they stored."""
    ops = bench.write_ops()
    per_round = settings.writes // settings.write_rounds
    next_index = 0
    began = time.monotonic()
    for round_index in range(settings.write_rounds):
        for row, by_impl in ops.items():
            items = bench.corpus.items(next_index, next_index + per_round)
            next_index += per_round
            shift = round_index % len(IMPLS)
            for impl in IMPLS[shift:] + IMPLS[:shift]:
                started = time.perf_counter()
                await by_impl[impl](items)
                results.add(row, impl, len(items) / (time.perf_counter() - started))
        group_commit = results.ratio(ROW_CONCURRENT, STORE, STORE, ROW_SINGLE) or 0.0
        log(
            f"[writes {round_index + 1}/{settings.write_rounds}, "
            f"{time.monotonic() - began:.0f} s] group commit so far {group_commit:.1f}x"
        )
    for row in ops:
        results.rounds[row] = settings.write_rounds
    return next_index


async def burst(op: ReadOp, start: int, duration: float) -> tuple[int, float]:
    """Call ``op`` from call number ``start`` until ``duration`` has passed (at least once)."""
    clock = time.perf_counter
    began = clock()
    deadline = began + duration
    index = start
    if op.aio is not None:
        call_async = op.aio
        while True:
            await call_async(index)
            index += 1
            if clock() >= deadline:
                break
    else:
        assert op.sync is not None
        call = op.sync
        while True:
            call(index)
            index += 1
            if clock() >= deadline:
                break
    return index - start, clock() - began


async def measure_reads(bench: Bench, settings: Settings, results: Results) -> None:
    """Each read row: warm up and check, then rounds of interleaved bursts."""
    rows = bench.read_rows(random.Random(7))
    for row in rows:
        began = time.monotonic()
        impls = [impl for impl in IMPLS if impl in row.ops]
        calls = dict.fromkeys(impls, 0)
        slowest = 0.0
        for impl in impls:
            op = row.ops[impl]
            result = await op(0)
            if row.check is not None:
                row.check(0, result)
            started = time.perf_counter()
            await op(1)
            slowest += max(settings.duration, time.perf_counter() - started)
            calls[impl] = 2
        rounds = min(settings.rounds, max(MIN_ROUNDS, int(settings.row_budget / slowest)))
        results.rounds[row.label] = rounds
        for round_index in range(rounds):
            shift = round_index % len(impls)
            for impl in impls[shift:] + impls[:shift]:
                done, seconds = await burst(row.ops[impl], calls[impl], settings.duration)
                calls[impl] += done
                results.add(row.label, impl, done / seconds)
        summary = ", ".join(
            f"{impl} {results.median(row.label, impl) or 0:,.0f}/s" for impl in impls
        )
        log(f"[{row.label}: {rounds} rounds, {time.monotonic() - began:.0f} s] {summary}")


# -- output ---------------------------------------------------------------------------------------


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_spread(results: Results, row: str) -> str:
    """The spread of LmdbStore's per-round ratios to raw LMDB, else to SQLite."""
    other = RAW if (row, RAW) in results.rates else SQLITE
    spread = results.spread(row, STORE, other)
    return "" if spread is None else f"{spread:.0f}%"


def table(results: Results) -> str:
    header = [
        "op",
        f"{STORE} ops/s",
        f"{RAW} ops/s",
        f"{SQLITE} ops/s",
        f"{PG} ops/s",
        "LmdbStore / raw",
        "LmdbStore / SQLite",
        "PostgresStore / LmdbStore",
        "spread",
        "rounds",
    ]
    lines = [_row(header), _row(["---", *["---:"] * (len(header) - 1)])]
    for row in results.rows:
        lines.append(
            _row(
                [
                    row,
                    *(fmt_rate(results.median(row, impl)) for impl in IMPLS),
                    fmt_ratio(results.ratio(row, STORE, RAW)),
                    fmt_ratio(results.ratio(row, STORE, SQLITE)),
                    fmt_ratio(results.ratio(row, PG, STORE)),
                    fmt_spread(results, row),
                    str(results.rounds.get(row, "")),
                ]
            )
        )
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def targets(results: Results) -> str:
    group_commit = results.ratio(ROW_CONCURRENT, STORE, STORE, ROW_SINGLE)
    retrieve = results.ratio(READ_RETRIEVE, STORE, RAW)

    def verdict(value: float | None, target: float) -> str:
        if value is None:
            return "not measured"
        return "met" if value >= target else "NOT met"

    return (
        f"- Group commit: {CONCURRENCY} concurrent durable creates / one-at-a-time durable "
        f"creates = {fmt_ratio(group_commit)} (median of per-round ratios; target >= "
        f"{GROUP_COMMIT_TARGET:.0f}x: {verdict(group_commit, GROUP_COMMIT_TARGET)})\n"
        f"- Retrieve: LmdbStore.retrieve / raw LMDB get + decode = {fmt_ratio(retrieve)} "
        f"(target >= {RETRIEVE_TARGET}x: {verdict(retrieve, RETRIEVE_TARGET)})"
    )


READ_RETRIEVE: Final = "retrieve (get + decode)"


def dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def preamble(settings: Settings, corpus: Corpus, load_before: float) -> str:
    sample = corpus.item(0)
    object_bytes = len(kmip_msgpack.object_to_msgpack(sample.obj))
    record_bytes = len(corpus.record(sample))
    sqlite_bytes = len(JSON_CODEC.object_to_json(sample.obj)) + len(
        JSON_CODEC.attributes_to_json(sample.attributes)
    )
    tag_index = "with an index on tags(tag)" if settings.tag_index else "no index on tags(tag)"
    writers = (
        "meeting in SQLite's busy handler"
        if settings.sqlite_busy_wait
        else "queueing for the one writer on a lock"
    )
    return (
        f"{corpus.total:,} objects: AES-256 SymmetricKey, {object_bytes} B of MessagePack "
        f"(LmdbStore / raw LMDB record with the attributes: {record_bytes} B; SQLite JSON "
        f"object + attributes: {sqlite_bytes} B), {len(sample.tags)} tags each; tag and "
        f"attribute searches match {GROUP_SIZE} objects.\n"
        f"Writes: {settings.writes:,} per row in {settings.write_rounds} rounds (rotating order), "
        f"ops/s = median round, ratio = median of per-round ratios. Reads: interleaved bursts of "
        f"{settings.duration} s, up to {settings.rounds} rounds (fewer for slow rows). spread = "
        f"interquartile range of LmdbStore's per-round ratios to raw LMDB (else to SQLite), in % "
        f"of their median.\n"
        f"raw LMDB: py-lmdb {dist_version('lmdb')}, sync + metasync, records [uid, owner, state, "
        f"wrapped_by, object, attributes] under the uid, one transaction per put "
        f"(the {CONCURRENCY}-concurrent row: {CONCURRENCY} threads, one transaction each; "
        f"batches: one transaction per batch). SQLite {sqlite3.sqlite_version}: WAL, "
        f"synchronous=FULL, "
        f"Cosmian's schema {tag_index}, JSON codec: {JSON_CODEC.name}; the {CONCURRENCY}-"
        f"concurrent row uses {CONCURRENCY} threads with a connection each, {writers}.\n"
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, msgspec "
        f"{msgspec.__version__}, load average {load_before:.2f} before the run.\n"
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# -- the command line -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    objects: int
    writes: int
    write_rounds: int
    rounds: int
    duration: float
    row_budget: float
    directory: Path | None
    tag_index: bool
    sqlite_busy_wait: bool
    json_path: Path | None


def parse_settings(argv: Sequence[str]) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, help="objects in each store for the reads (100000)")
    parser.add_argument("--quick", action="store_true", help="smoke test: small counts, ~15 s")
    parser.add_argument("--writes", type=int, help="objects per write row (10000)")
    parser.add_argument("--write-rounds", type=int, help="rounds of the write rows (10)")
    parser.add_argument("--rounds", type=int, help="rounds of bursts per read row, at most (15)")
    parser.add_argument("--duration", type=float, help="seconds per read burst (0.1)")
    parser.add_argument("--dir", type=Path, help="where to make the temporary directory")
    parser.add_argument(
        "--sqlite-no-tag-index",
        action="store_true",
        help="exactly Cosmian's SQLite schema: no index on tags(tag)",
    )
    parser.add_argument(
        "--sqlite-busy-wait",
        action="store_true",
        help="concurrent SQLite writers meet in SQLite's busy handler, not on a lock (slow)",
    )
    parser.add_argument("--json", type=Path, help="also write every round's ops/s to this file")
    args = parser.parse_args(argv)
    quick = args.quick
    writes = args.writes or (300 if quick else 10_000)
    write_rounds = args.write_rounds or (3 if quick else 10)
    settings = Settings(
        objects=max(args.objects or (3_000 if quick else 100_000), 3 * writes),
        writes=writes,
        write_rounds=write_rounds,
        rounds=args.rounds or (3 if quick else 15),
        duration=args.duration or (0.05 if quick else 0.1),
        row_budget=2.0 if quick else 12.0,
        directory=args.dir,
        tag_index=not args.sqlite_no_tag_index,
        sqlite_busy_wait=args.sqlite_busy_wait,
        json_path=args.json,
    )
    if min(writes // write_rounds, settings.rounds) < 1 or settings.duration <= 0:
        parser.error("--writes must be at least --write-rounds; --rounds, --duration positive")
    return settings


async def run(settings: Settings, corpus: Corpus, directory: Path) -> Results:
    results = Results()
    bench = Bench(directory, corpus, settings)
    try:
        await bench.store.open()
        await bench.pg.open()
        stored = await measure_writes(bench, settings, results)
        started = time.monotonic()
        for start in range(stored, corpus.total, 10 * FILL_BATCH):
            await bench.fill(corpus.items(start, min(corpus.total, start + 10 * FILL_BATCH)))
        log(f"[filled to {corpus.total:,} objects in {time.monotonic() - started:.0f} s]")
        gc.collect()
        gc.freeze()
        await measure_reads(bench, settings, results)
    finally:
        await bench.close()
    return results


def main(argv: Sequence[str]) -> int:
    load_before = os.getloadavg()[0]
    settings = parse_settings(argv)
    began = time.monotonic()
    corpus = Corpus(settings.objects)
    try:
        with tempfile.TemporaryDirectory(
            prefix="kms-iface-store-bench-", dir=settings.directory
        ) as directory:
            log(f"stores in {directory}; SQLite JSON codec: {JSON_CODEC.name}")
            results = anyio.run(run, settings, corpus, Path(directory))
    except BenchError as exc:
        log(f"store_bench.py: error: {exc}")
        return 1
    print(preamble(settings, corpus, load_before))
    print(table(results))
    print()
    print(targets(results))
    if settings.json_path is not None:
        document: dict[str, Any] = {
            "settings": {k: str(v) for k, v in vars(settings).items()},
            "rounds": results.rounds,
            "rates": [
                {"op": row, "impl": impl, "ops_per_s": rates}
                for (row, impl), rates in results.rates.items()
            ],
        }
        settings.json_path.write_text(json.dumps(document, indent=2) + "\n")
    log(f"[done in {time.monotonic() - began:.0f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
