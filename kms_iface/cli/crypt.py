"""``kms-iface encrypt|decrypt``: files of any size through a token's AES key, in constant memory.

The format is ``kms_iface.streaming``'s (chunked AES-GCM). The output is written to a temporary
file next to ``--out`` (mode 0600) and renamed to ``--out`` only once the whole stream has been
processed: a failed or interrupted run leaves no partial output, and an existing ``--out`` is
replaced only with ``--force``.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from kms_iface.cli.common import (
    OperationError,
    UsageError,
    find_key,
    key_option,
    module_options,
    pin_options,
    slot_options,
    token_session,
)
from kms_iface.hsm import KeyType
from kms_iface.streaming import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    decrypt_stream,
    encrypt_stream,
)

__all__ = ["decrypt", "encrypt"]


def _file_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--in F --out F --force``."""
    command = click.option("--force", is_flag=True, help="Replace --out if it exists.")(command)
    command = click.option(
        "--out",
        "out_path",
        type=click.Path(dir_okay=False),
        required=True,
        help="Output file (mode 0600).",
    )(command)
    return click.option(
        "--in",
        "in_path",
        type=click.Path(dir_okay=False, exists=True),
        required=True,
        help="Input file.",
    )(command)


def _progress() -> Progress:
    """A progress bar on stderr, shown only when stderr is a terminal."""
    err = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )


def _check_absent(out_path: str, force: bool) -> None:
    if not force and os.path.lexists(out_path):
        raise UsageError(f"{out_path} exists: give --force to replace it")


@contextlib.contextmanager
def _published(out_path: str, force: bool) -> Iterator[io.FileIO]:
    """An unbuffered temporary file beside ``out_path``, renamed to it if the block succeeds
    and deleted if it fails."""
    directory = os.path.dirname(os.path.abspath(out_path))
    try:
        fd, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(out_path)}.", suffix=".part", dir=directory
        )
    except OSError as exc:
        raise OperationError(f"cannot write in {directory}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb", buffering=0) as sink:
            yield sink
            os.fsync(sink.fileno())
        _check_absent(out_path, force)
        os.replace(temporary, out_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _run(
    operation: str,
    in_path: str,
    out_path: str,
    force: bool,
    key_id: str,
    options: dict[str, Any],
    stream: Callable[..., int],
    **stream_options: Any,
) -> None:
    _check_absent(out_path, force)  # before the PIN is asked for; checked again at the end
    with token_session(**options) as target:
        key = find_key(target, key_id, KeyType.AES_KEY, f"{operation} a file")
        try:
            with (
                open(in_path, "rb", buffering=0) as source,
                _published(out_path, force) as sink,
                _progress() as progress,
            ):
                task = progress.add_task(f"{operation}ing", total=os.fstat(source.fileno()).st_size)
                size = stream(
                    target.session,
                    key,
                    source,
                    sink,
                    progress=lambda count: progress.advance(task, count),
                    **stream_options,
                )
        except OSError as exc:
            raise OperationError(f"{operation} failed: {exc.strerror or exc}") from None
    click.echo(f"{operation}ed {size} plaintext bytes into {out_path}")


@click.command()
@module_options
@slot_options
@pin_options
@key_option("Id of the AES key.")
@_file_options
@click.option(
    "--chunk-size",
    type=click.IntRange(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
    default=DEFAULT_CHUNK_SIZE,
    show_default=True,
    metavar="BYTES",
    help="Plaintext bytes per GCM chunk.",
)
def encrypt(
    key_id: str, in_path: str, out_path: str, force: bool, chunk_size: int, **options: Any
) -> None:
    """Encrypt a file with an AES key of the token (chunked AES-GCM, any size)."""
    _run(
        "encrypt", in_path, out_path, force, key_id, options, encrypt_stream, chunk_size=chunk_size
    )


@click.command()
@module_options
@slot_options
@pin_options
@key_option("Id of the AES key.")
@_file_options
def decrypt(key_id: str, in_path: str, out_path: str, force: bool, **options: Any) -> None:
    """Decrypt a file made by 'kms-iface encrypt'; --out appears only once every chunk checks."""
    _run("decrypt", in_path, out_path, force, key_id, options, decrypt_stream)
