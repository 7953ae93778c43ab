"""``kms-iface store copy``: every object, tag and grant of one store into another, verified.

``--from`` is a TOML configuration file (its ``default_store``) or an LMDB store directory;
``--to`` is a configuration file, a PostgreSQL DSN (``postgresql://...``, ``postgres://...`` or
libpq ``key=value`` words) or an LMDB directory, created when missing. The copy goes through
``kms_iface.stores.copy.copy_store``: it refuses a target that is not empty unless ``--force``,
and verifies the target against the source. PostgreSQL support is imported only when a store is
in PostgreSQL; a DSN is never printed (it may carry a password).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

import anyio
import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from kms_iface.cli.common import OperationError, UsageError
from kms_iface.config import load_config
from kms_iface.stores.base import Dumpable
from kms_iface.stores.copy import CopyReport, CopyStage, CopyTarget, TargetNotEmptyError, copy_store
from kms_iface.stores.lmdb import LmdbStore

__all__ = ["store"]

POSTGRES_HINT: Final = "pip install 'kms-iface[postgres]'"
MAX_BATCH: Final = 100_000
_DSN_URI: Final = re.compile(r"(?i)^postgres(?:ql)?://")
_DSN_WORDS: Final = re.compile(r"^\s*[A-Za-z_]+\s*=")
_STAGES: Final[dict[CopyStage, str]] = {
    "objects": "copying objects",
    "grants": "copying grants",
    "verify objects": "verifying objects",
    "verify grants": "verifying grants",
}


class _Store(CopyTarget, Protocol):
    """A store the command opens: a copy target with a life cycle (the source is also Dumpable)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class _Location:
    """Where a store is: an LMDB directory or a DSN, and how messages name it (never the DSN)."""

    kind: Literal["lmdb", "postgres"]
    where: str
    label: str

    def same_store(self, other: _Location) -> bool:
        if self.kind != other.kind:
            return False
        if self.kind == "lmdb":
            return os.path.realpath(self.where) == os.path.realpath(other.where)
        return self.where == other.where

    def make(self) -> _Store:
        """The (unopened) store; PostgreSQL support is imported here, and only for a DSN."""
        if self.kind == "lmdb":
            return LmdbStore(self.where)
        try:
            from kms_iface.stores.postgres import PostgresStore
        except ImportError as exc:
            raise UsageError(
                f"PostgreSQL stores need the 'postgres' extra ({exc}): {POSTGRES_HINT}"
            ) from None
        return PostgresStore(self.where)


def _from_config(path: str) -> _Location:
    store = load_config(path).default_store
    if store.kind == "lmdb" and store.path is not None:
        return _Location("lmdb", store.path, f"{path} (LMDB store {store.path})")
    if store.kind == "postgres" and store.dsn is not None:
        return _Location("postgres", store.dsn, f"{path} (PostgreSQL)")
    raise AssertionError(f"load_config returned an incomplete {store!r}")


def _source(ctx: click.Context, param: click.Parameter, value: str) -> _Location:
    path = Path(value)
    if path.is_file():
        return _from_config(value)
    if not path.is_dir():
        raise click.BadParameter(f"{value} is neither a configuration file nor a directory")
    if not (path / "data.mdb").is_file():
        raise click.BadParameter(f"{value} holds no LMDB store (no data.mdb)")
    return _Location("lmdb", value, f"LMDB store {value}")


def _target(ctx: click.Context, param: click.Parameter, value: str) -> _Location:
    path = Path(value)
    if _DSN_URI.match(value):
        return _Location("postgres", value, "PostgreSQL")
    if path.is_file():
        return _from_config(value)
    if path.is_dir():
        if any(path.iterdir()) and not (path / "data.mdb").is_file():
            raise click.BadParameter(
                f"{value} is a directory with other files in it, not an LMDB store"
            )
    elif _DSN_WORDS.match(value):
        return _Location("postgres", value, "PostgreSQL")
    elif path.exists():
        raise click.BadParameter(f"{value} is neither a file nor a directory")
    return _Location("lmdb", value, f"LMDB store {value}")


class _Bars:
    """Progress on stderr, one line per stage, shown only when stderr is a terminal."""

    def __init__(self) -> None:
        err = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,}"),
            TimeElapsedColumn(),
            console=err,
            disable=not err.is_terminal,
        )
        self._tasks: dict[CopyStage, TaskID] = {}

    def __call__(self, stage: CopyStage, count: int) -> None:
        if stage not in self._tasks:
            self.finish()
            self._tasks[stage] = self.progress.add_task(_STAGES[stage], total=None)
        self.progress.advance(self._tasks[stage], count)

    def finish(self) -> None:
        """Show the stages so far as complete (their totals were unknown until now)."""
        for task in self.progress.tasks:
            self.progress.update(task.id, total=task.completed)


@contextlib.asynccontextmanager
async def _opened(store: _Store) -> AsyncIterator[_Store]:
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@click.group()
def store() -> None:
    """Copy a whole store (objects, tags, grants) between LMDB and PostgreSQL."""


@store.command()
@click.option(
    "--from",
    "source",
    required=True,
    metavar="SRC",
    callback=_source,
    help="A configuration file (its default_store) or an LMDB store directory.",
)
@click.option(
    "--to",
    "target",
    required=True,
    metavar="DST",
    callback=_target,
    help="A configuration file, a PostgreSQL DSN, or an LMDB directory (created when missing).",
)
@click.option("--force", is_flag=True, help="Copy into a target that is not empty.")
@click.option(
    "--batch",
    type=click.IntRange(1, MAX_BATCH),
    default=1000,
    show_default=True,
    help="Objects and grants read and written per step.",
)
def copy(source: _Location, target: _Location, force: bool, batch: int) -> None:
    """Copy every object, tag and grant of SRC into DST, then verify DST against SRC.

    Stop the servers that write to SRC first: a source written during the copy fails the
    verification. DST must be empty unless --force.
    """
    if source.same_store(target):
        raise UsageError("--from and --to name the same store")
    source_store, target_store = source.make(), target.make()
    bars = _Bars()

    async def run() -> CopyReport:
        async with _opened(source_store) as reader, _opened(target_store) as writer:
            if not isinstance(reader, Dumpable):
                raise OperationError(f"{source.label} cannot list its content")
            return await copy_store(
                reader, writer, allow_non_empty=force, batch=batch, progress=bars
            )

    try:
        with bars.progress:
            report = anyio.run(run)
            bars.finish()
    except TargetNotEmptyError as exc:
        raise OperationError(f"{exc}: give --force to copy into it anyway") from None
    click.echo(
        f"copied {_count(report.objects, 'object')} and {_count(report.grants, 'grant')} "
        f"from {source.label} to {target.label}"
    )
    exact = report.verification == "dump" and not force
    click.echo(
        "verified: every object and grant of the source is in the target, unchanged"
        + (", and nothing else" if exact else "")
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
