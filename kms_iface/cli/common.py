"""Options shared by every subcommand, how they become a module, a slot, a PIN and a logged-in
session, and the one-line error and output conventions of every command.

``--module PATH`` (default: the profile's library), ``--profile NAME`` (default ``softhsm2``),
``--slot N`` or ``--token LABEL``, and the PIN from ``--pin-env VAR``, ``--pin-file F`` or a prompt
when a terminal is attached. A PIN is never a plain argument, never echoed, and lives in a
``SecretBytes`` that the caller wipes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, Final, NamedTuple, TypeVar

import click
from rich.console import Console

from kms_iface._pkcs11 import Session
from kms_iface.errors import InvalidRequestError
from kms_iface.hsm import KeyType
from kms_iface.pkcs11 import keys as hsm_keys
from kms_iface.pkcs11.module import Module
from kms_iface.pkcs11.profiles import get_profile, resolve_library
from kms_iface.secrets import SecretBytes, wipe

__all__ = [
    "KIND",
    "OperationError",
    "TokenSession",
    "UsageError",
    "console",
    "find_key",
    "key_option",
    "module_options",
    "open_module",
    "pin_options",
    "read_pin",
    "resolve_slot",
    "show_id",
    "slot_options",
    "token_session",
]

F = TypeVar("F", bound=Callable[..., Any])

MAX_PIN_FILE_BYTES: Final = 4096


KIND: Final[dict[KeyType | None, str]] = {
    # what a key is called in messages, by the type a lookup wants
    KeyType.AES_KEY: "AES key",
    KeyType.RSA_PRIVATE_KEY: "RSA private key",
    KeyType.RSA_PUBLIC_KEY: "RSA public key",
    None: "key",
}


class UsageError(click.UsageError):
    """A usage problem found after parsing (exit code 2, like click's own)."""


def module_options(command: F) -> F:
    """``--module PATH`` and ``--profile NAME``."""
    command = click.option(
        "--profile",
        default="softhsm2",
        show_default=True,
        help="Vendor profile: its library is the default module, and it sets vendor limits.",
    )(command)
    return click.option(
        "--module",
        "module_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="PKCS#11 module (shared library); default: the profile's library.",
    )(command)


def slot_options(command: F) -> F:
    """``--slot N`` or ``--token LABEL`` (one of them)."""
    command = click.option("--token", "token_label", default=None, help="Token label.")(command)
    return click.option(
        "--slot", "slot_id", type=click.IntRange(min=0), default=None, help="Slot id."
    )(command)


def pin_options(command: F) -> F:
    """``--pin-env VAR`` or ``--pin-file F``; a prompt when neither is given on a terminal."""
    command = click.option(
        "--pin-file",
        type=click.Path(dir_okay=False, exists=True),
        default=None,
        help="File whose first line is the user PIN.",
    )(command)
    return click.option(
        "--pin-env", default=None, metavar="VAR", help="Environment variable holding the user PIN."
    )(command)


def open_module(module_path: str | None, profile: str) -> Module:
    """The module ``--module`` names, else the profile's library."""
    return Module(resolve_library(get_profile(profile), module_path))


def resolve_slot(module: Module, slot_id: int | None, token_label: str | None) -> int:
    """The slot of ``--slot`` or ``--token``; giving both, or neither, is a usage error."""
    if slot_id is not None and token_label is not None:
        raise UsageError("give --slot or --token, not both")
    if token_label is not None:
        return module.find_slot(token_label)
    if slot_id is None:
        raise UsageError("this command needs --slot N or --token LABEL")
    return slot_id


def read_pin(pin_env: str | None, pin_file: str | None) -> SecretBytes:
    """The user PIN from its one source; without a source and without a terminal: exit 2."""
    if pin_env is not None and pin_file is not None:
        raise UsageError("give --pin-env or --pin-file, not both")
    if pin_env is not None:
        value = os.environ.get(pin_env)
        if value is None:
            raise UsageError(f"the environment variable {pin_env} (--pin-env) is not set")
        return SecretBytes(value.encode())
    if pin_file is not None:
        with open(pin_file, "rb") as file:
            raw = bytearray(file.read(MAX_PIN_FILE_BYTES + 1))
        try:
            if len(raw) > MAX_PIN_FILE_BYTES:
                raise UsageError(f"{pin_file} (--pin-file) is too long to hold a PIN")
            end = raw.find(b"\n")
            end = len(raw) if end < 0 else end
            if end and raw[end - 1] == 0x0D:  # a CRLF line
                end -= 1
            with memoryview(raw) as view:
                return SecretBytes(view[:end])
        finally:
            wipe(raw)
    if not sys.stdin.isatty():
        raise UsageError("no PIN source: give --pin-env VAR or --pin-file F (no terminal to ask)")
    return SecretBytes(click.prompt("User PIN", hide_input=True, err=True).encode())


class OperationError(click.ClickException):
    """A failure outside the library (a file that cannot be written): one line, exit 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"kms-iface: {self.format_message()}", err=True)


class TokenSession(NamedTuple):
    """A logged-in session, its slot and the profile's ``C_FindObjects`` batch size."""

    session: Session
    slot: int
    batch: int


@contextlib.contextmanager
def token_session(
    module_path: str | None,
    profile: str,
    slot_id: int | None,
    token_label: str | None,
    pin_env: str | None,
    pin_file: str | None,
) -> Iterator[TokenSession]:
    """One session logged in to the token the common options name; the PIN copy is wiped."""
    batch = get_profile(profile).find_batch
    with open_module(module_path, profile) as module:
        slot = resolve_slot(module, slot_id, token_label)
        with read_pin(pin_env, pin_file) as pin:
            pool = module.pool(slot, pin, size=1)
        with pool, pool.session() as session:
            yield TokenSession(session, slot, batch)


def key_option(help_text: str) -> Callable[[F], F]:
    """``--id ID`` (alias ``--key``): a key id, UTF-8 text."""
    return click.option("--id", "--key", "key_id", required=True, metavar="ID", help=help_text)


def show_id(raw: bytes) -> str:
    """An id for display: its text when it is printable UTF-8, else ``0x`` and hex."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + raw.hex()
    return text if text.isprintable() else "0x" + raw.hex()


def console() -> Console:
    """stdout, without markup (labels are data); unwrapped when it is not a terminal."""
    return Console(
        markup=False, highlight=False, emoji=False, width=None if sys.stdout.isatty() else 4096
    )


def find_key(target: TokenSession, key_id: str, want: KeyType | None, purpose: str) -> int:
    """The handle of the key ``key_id``; none raises ``InvalidRequestError`` naming id and slot."""
    raw = hsm_keys.key_id_bytes(key_id)
    handle = hsm_keys.find_key(target.session, raw, want, batch=target.batch, purpose=purpose)
    if handle is None:
        kind = KIND[want]
        raise InvalidRequestError(f"no {kind} with id {show_id(raw)!r} in slot {target.slot}")
    return handle
