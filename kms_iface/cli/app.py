"""The ``kms-iface`` group: lazy subcommands, one error line per failure, exit codes.

Subcommands are imported when used (``bench`` pulls in matplotlib; ``info`` should not). A
failure the library reports (an ``InterfaceError``) prints its message as one line on stderr and
exits 1; ``--debug`` prints the traceback too. Usage errors exit 2 (click's own convention).
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any, Final

import click

from kms_iface.errors import InterfaceError

__all__ = ["cli"]

# name -> "module:attribute" of its click command
COMMANDS: Final[dict[str, str]] = {
    "info": "kms_iface.cli.tokens:info",
    "slots": "kms_iface.cli.tokens:slots",
    "mechanisms": "kms_iface.cli.tokens:mechanisms",
    "keys": "kms_iface.cli.keys:keys",
    "encrypt": "kms_iface.cli.crypt:encrypt",
    "decrypt": "kms_iface.cli.crypt:decrypt",
    "bench": "kms_iface.cli.bench:bench",
    "store": "kms_iface.cli.store:store",
}

OPERATION_FAILED: Final = 1
USAGE_ERROR: Final = 2


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (or help lists it)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InterfaceError as exc:
            if ctx.find_root().params.get("debug"):
                traceback.print_exc()
            click.echo(f"kms-iface: {exc}", err=True)
            ctx.exit(OPERATION_FAILED)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Print the traceback of a failure.")
@click.version_option(package_name="kms-iface", prog_name="kms-iface")
def cli(debug: bool) -> None:
    """Look at PKCS#11 tokens, manage and use their keys, benchmark them, and copy key stores."""
    del debug  # read by the error handler through the root context
