"""``kms-iface info|slots|mechanisms``: what a PKCS#11 module and its tokens say about
themselves, as tables with every flag word decoded. No PIN: these read public information.
"""

from __future__ import annotations

from typing import Final

import click
from rich.table import Table

from kms_iface.cli.common import console, module_options, open_module, resolve_slot, slot_options
from kms_iface.errors import InvalidRequestError
from kms_iface.pkcs11 import Module, Version
from kms_iface.pkcs11 import constants as ck

__all__ = ["info", "mechanisms", "slots"]

_UNAVAILABLE: Final = (1 << 64) - 1  # CK_UNAVAILABLE_INFORMATION (a 64-bit CK_ULONG)
_INFINITE: Final = 0  # CK_EFFECTIVELY_INFINITE, in the maximum session counts


def _version(version: Version) -> str:
    return f"{version.major}.{version.minor}"


def _flags(flags: int, table: dict[int, str]) -> str:
    return ", ".join(ck.flag_words(flags, table)) or "-"


def _count(value: int, *, limit: bool = False) -> str:
    """A CK_ULONG count: "n/a" when unavailable, "unlimited" for a zero session limit."""
    if value == _UNAVAILABLE:
        return "n/a"
    if limit and value == _INFINITE:
        return "unlimited"
    return str(value)


def _selected_slots(module: Module, slot_id: int | None, token_label: str | None) -> list[int]:
    """The slot ``--slot``/``--token`` names, else every slot (with a token or not)."""
    if slot_id is None and token_label is None:
        return module.slots(token_present=False)
    return [resolve_slot(module, slot_id, token_label)]


def _library_table(module: Module) -> Table:
    library = module.info()
    table = Table(title="PKCS#11 library", show_header=False)
    table.add_column("field")
    table.add_column("value")
    table.add_row("path", module.path)
    table.add_row("description", library.description)
    table.add_row("manufacturer", library.manufacturer_id)
    table.add_row("library version", _version(library.library_version))
    table.add_row("cryptoki version", _version(library.cryptoki_version))
    table.add_row("interface version", _version(module.library.interface_version))
    return table


def _slot_table(module: Module, slots: list[int]) -> Table:
    table = Table(title="Slots")
    for column in ("slot", "description", "manufacturer", "flags", "hardware", "firmware"):
        table.add_column(column)
    for slot in slots:
        slot_info = module.slot_info(slot)
        table.add_row(
            str(slot),
            slot_info.description,
            slot_info.manufacturer_id,
            _flags(slot_info.flags, ck.SLOT_FLAGS),
            _version(slot_info.hardware_version),
            _version(slot_info.firmware_version),
        )
    return table


def _token_table(module: Module, slots: list[int]) -> Table:
    table = Table(title="Tokens")
    columns = ("slot", "label", "manufacturer", "model", "serial", "flags", "sessions")
    for column in (*columns, "rw sessions", "PIN length", "free memory"):
        table.add_column(column)
    for slot in slots:
        if not module.slot_info(slot).flags & ck.CKF_TOKEN_PRESENT:
            continue
        token = module.token_info(slot)
        table.add_row(
            str(slot),
            token.label,
            token.manufacturer_id,
            token.model,
            token.serial_number,
            _flags(token.flags, ck.TOKEN_FLAGS),
            f"{_count(token.session_count)} of {_count(token.max_session_count, limit=True)}",
            f"{_count(token.rw_session_count)} of {_count(token.max_rw_session_count, limit=True)}",
            f"{token.min_pin_len}-{token.max_pin_len}",
            f"public {_count(token.free_public_memory)}, "
            f"private {_count(token.free_private_memory)}",
        )
    return table


@click.command()
@module_options
@slot_options
def info(
    module_path: str | None, profile: str, slot_id: int | None, token_label: str | None
) -> None:
    """The library's description and versions; with --slot or --token, that slot's too."""
    with open_module(module_path, profile) as module:
        out = console()
        out.print(_library_table(module))
        if slot_id is not None or token_label is not None:
            selected = _selected_slots(module, slot_id, token_label)
            out.print(_slot_table(module, selected))
            out.print(_token_table(module, selected))


@click.command()
@module_options
@slot_options
def slots(
    module_path: str | None, profile: str, slot_id: int | None, token_label: str | None
) -> None:
    """Every slot and the token in it (or only the one --slot or --token names)."""
    with open_module(module_path, profile) as module:
        selected = _selected_slots(module, slot_id, token_label)
        out = console()
        out.print(_slot_table(module, selected))
        out.print(_token_table(module, selected))


@click.command()
@module_options
@slot_options
def mechanisms(
    module_path: str | None, profile: str, slot_id: int | None, token_label: str | None
) -> None:
    """The mechanisms of a token: key sizes and what each can do (default: the first token)."""
    with open_module(module_path, profile) as module:
        if slot_id is None and token_label is None:
            present = module.slots(token_present=True)
            if not present:
                raise InvalidRequestError(f"no slot of {module.path!r} holds a token")
            slot = present[0]
        else:
            slot = resolve_slot(module, slot_id, token_label)
        table = Table(title=f"Mechanisms of slot {slot} ({module.token_info(slot).label})")
        for column in ("mechanism", "min key", "max key", "flags"):
            table.add_column(column, justify="right" if "key" in column else "left")
        for mechanism in module.mechanisms(slot):
            details = module.mechanism_info(slot, mechanism)
            table.add_row(
                ck.mechanism_name(mechanism),
                str(details.min_key_size),
                str(details.max_key_size),
                _flags(details.flags, ck.MECHANISM_FLAGS),
            )
        console().print(table)
