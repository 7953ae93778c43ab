"""The ``kms-iface`` command line (also ``python -m kms_iface``).

It needs the ``cli`` extra (click, rich, matplotlib); without it ``main`` says how to install it.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

_EXTRA_HINT = (
    "kms-iface: the command line needs the 'cli' extra ({missing} is missing): "
    "pip install 'kms-iface[cli]'"
)


def main() -> None:
    """Run the command line; exit codes: 0 success, 1 operation failed, 2 usage error."""
    try:
        from kms_iface.cli.app import cli
    except ModuleNotFoundError as exc:
        if exc.name not in {"click", "rich"}:
            raise
        print(_EXTRA_HINT.format(missing=exc.name), file=sys.stderr)
        raise SystemExit(2) from None
    cli(prog_name="kms-iface")
