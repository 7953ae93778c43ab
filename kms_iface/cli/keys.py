"""``kms-iface keys list|create|delete|export``: the keys of one token, as Cosmian makes them.

Keys are named by id (``--id`` or ``--key``): CKA_ID, else CKA_LABEL, the rules of
``kms_iface.pkcs11.keys``. ``create`` uses Cosmian's templates (AES 128/256 bits; RSA pairs
whose public key is ``<id>_pk``); ``export`` writes only what the token lets out: the raw bytes
of an AES key, an RSA key as PKCS#1 DER (``RSAPrivateKey`` or ``RSAPublicKey``); a sensitive key
is refused by the token.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

import click
from rich.table import Table

from kms_iface._pkcs11 import Session
from kms_iface.cli.common import (
    KIND,
    OperationError,
    UsageError,
    console,
    find_key,
    key_option,
    module_options,
    pin_options,
    show_id,
    slot_options,
    token_session,
)
from kms_iface.der import integer_sequence
from kms_iface.errors import ObjectHandleInvalidError
from kms_iface.hsm import AesKeyMaterial, RsaPrivateKeyMaterial
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11 import keys as hsm_keys
from kms_iface.streaming import write_all

if TYPE_CHECKING:
    from kms_iface._pkcs11 import AttributeValue

__all__ = ["keys"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_BITS: Final = {"aes": 256, "rsa": 2048}
ALLOWED_BITS: Final = {"aes": hsm_keys.AES_KEY_BITS, "rsa": hsm_keys.RSA_KEY_BITS}
_KEY_CLASSES: Final = {
    ck.CKO_SECRET_KEY: "secret key",
    ck.CKO_PRIVATE_KEY: "private key",
    ck.CKO_PUBLIC_KEY: "public key",
}
_LIST_ATTRS: Final = (
    ck.CKA_CLASS,
    ck.CKA_KEY_TYPE,
    ck.CKA_ID,
    ck.CKA_LABEL,
    ck.CKA_VALUE_LEN,
    ck.CKA_MODULUS,
    ck.CKA_SENSITIVE,
    ck.CKA_EXTRACTABLE,
)


def _yes_no(value: AttributeValue) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _bits(key_type: AttributeValue, value_len: AttributeValue, modulus: AttributeValue) -> str:
    if key_type == ck.CKK_RSA and isinstance(modulus, bytes) and modulus:
        return str(int.from_bytes(modulus, "big").bit_length())
    if isinstance(value_len, int) and value_len:
        return str(value_len * 8)
    return "-"


def _key_rows(session: Session, batch: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for handle in session.find_objects([], batch):
        try:
            values = session.get_attributes(handle, _LIST_ATTRS)
        except ObjectHandleInvalidError:
            continue  # destroyed since the search
        object_class, key_type, raw_id, label, value_len, modulus, sensitive, extractable = values
        if not isinstance(object_class, int) or object_class not in _KEY_CLASSES:
            continue
        rows.append(
            (
                show_id(raw_id) if isinstance(raw_id, bytes) else "",
                show_id(label) if isinstance(label, bytes) else "",
                _KEY_CLASSES[object_class],
                ck.key_type_name(key_type).removeprefix("CKK_")
                if isinstance(key_type, int)
                else "-",
                _bits(key_type, value_len, modulus),
                _yes_no(sensitive),
                _yes_no(extractable),
            )
        )
    return sorted(rows)


@click.group()
def keys() -> None:
    """List, create, delete and export the keys of a token (needs the user PIN)."""


@keys.command("list")
@module_options
@slot_options
@pin_options
def list_keys(**options: Any) -> None:
    """Table of the token's keys: id, label, class, key type, length, sensitive, extractable."""
    with token_session(**options) as target:
        rows = _key_rows(target.session, target.batch)
    table = Table(title=f"Keys in slot {target.slot}")
    for column in ("id", "label", "class", "type", "bits", "sensitive", "extractable"):
        table.add_column(column, justify="right" if column == "bits" else "left")
    for row in rows:
        table.add_row(*row)
    console().print(table)


@keys.command()
@module_options
@slot_options
@pin_options
@click.option(
    "--type", "key_type", type=click.Choice(["aes", "rsa"]), required=True, help="Key algorithm."
)
@click.option(
    "--length",
    "bits",
    type=int,
    default=None,
    metavar="BITS",
    help="Key length: AES 128 or 256 (default 256), RSA 1024-4096 (default 2048).",
)
@key_option("Id of the new key (an RSA public key gets <ID>_pk).")
@click.option("--sensitive", is_flag=True, help="The key value can never leave the token.")
def create(key_type: str, bits: int | None, key_id: str, sensitive: bool, **options: Any) -> None:
    """Create an AES key or an RSA key pair on the token (Cosmian's templates)."""
    bits = DEFAULT_BITS[key_type] if bits is None else bits
    if bits not in ALLOWED_BITS[key_type]:
        allowed = ", ".join(str(b) for b in ALLOWED_BITS[key_type])
        raise UsageError(f"--length for --type {key_type} must be one of {allowed}, got {bits}")
    raw = hsm_keys.key_id_bytes(key_id)
    with token_session(**options) as target:
        if key_type == "aes":
            hsm_keys.create_aes_key(target.session, raw, bits, sensitive, batch=target.batch)
            click.echo(f"created AES-{bits} key {show_id(raw)!r} in slot {target.slot}")
        else:
            public = raw + b"_pk"
            hsm_keys.create_rsa_key_pair(
                target.session, raw, public, bits, sensitive, batch=target.batch
            )
            click.echo(
                f"created RSA-{bits} key pair {show_id(raw)!r} (private) and "
                f"{show_id(public)!r} (public) in slot {target.slot}"
            )


@keys.command()
@module_options
@slot_options
@pin_options
@key_option("Id of the key to delete.")
def delete(key_id: str, **options: Any) -> None:
    """Delete one key (for an RSA pair: <ID> is the private key, <ID>_pk the public one)."""
    with token_session(**options) as target:
        handle = find_key(target, key_id, None, "delete")
        kind = KIND[hsm_keys.get_key_type(target.session, handle)]
        target.session.destroy_object(handle)
    click.echo(f"deleted {kind} {key_id!r} from slot {target.slot}")


# -- export -----------------------------------------------------------------------------------


def _open_output(path: str, force: bool) -> IO[bytes]:
    """``path`` for writing, mode 0600; an existing file only with ``force``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        return os.fdopen(os.open(path, flags, 0o600), "wb", buffering=0)
    except FileExistsError:
        raise UsageError(f"{path} exists: give --force to replace it") from None


@keys.command()
@module_options
@slot_options
@pin_options
@key_option("Id of the key to export.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="File to write (mode 0600); default: stdout, which must not be a terminal.",
)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def export(key_id: str, out: str | None, force: bool, **options: Any) -> None:
    """Export a key the token lets out: AES raw bytes, RSA as PKCS#1 DER.

    A sensitive key stays in the token (exit 1).
    """
    if out is None and sys.stdout.isatty():
        raise UsageError("the key is binary: give --out F, or redirect stdout to a file")
    with token_session(**options) as target:
        handle = find_key(target, key_id, None, "export")
        exported = hsm_keys.export(target.session, handle)
    material = exported.key_material
    if isinstance(material, AesKeyMaterial):
        blob = material.key
    elif isinstance(material, RsaPrivateKeyMaterial):
        secrets = (
            material.private_exponent,
            material.prime_1,
            material.prime_2,
            material.exponent_1,
            material.exponent_2,
            material.coefficient,
        )
        with contextlib.ExitStack() as wiping:
            for secret in secrets:
                wiping.enter_context(secret)
            blob = integer_sequence((b"", material.modulus, material.public_exponent, *secrets))
    else:
        blob = integer_sequence((material.modulus, material.public_exponent))
    size = len(blob)
    # Unbuffered writes: no buffer keeps a copy of the key once ``blob`` is wiped.
    with blob, memoryview(blob) as view:
        try:
            if out is None:
                sys.stdout.flush()
                with open(sys.stdout.fileno(), "wb", buffering=0, closefd=False) as stdout:
                    write_all(stdout, view)
                return
            with _open_output(out, force) as file:
                write_all(file, view)
        except OSError as exc:
            raise OperationError(f"cannot write {out or 'stdout'}: {exc.strerror or exc}") from None
    click.echo(f"exported {exported.id!r} ({size} bytes) to {out}")
