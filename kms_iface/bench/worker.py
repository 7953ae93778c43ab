"""One implementation's benchmark worker: ``python -m kms_iface.bench.worker --impl NAME ...``.

Only the chosen implementation's module (and so its binding) is imported. The PIN is the first
line of stdin; then the protocol of ``kms_iface.bench.protocol`` runs on stdin and stdout.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Final

from kms_iface.bench.protocol import BenchError, Options, Runner, emit, serve

# --impl name -> the module that provides ``start(options) -> Runner``
IMPLS: Final = {
    "kms_iface": "kms_iface.bench.impl_kms_iface",
    "kms_iface-into": "kms_iface.bench.impl_kms_iface",
    "python-pkcs11": "kms_iface.bench.impl_python_pkcs11",
    "pykcs11": "kms_iface.bench.impl_pykcs11",
    "Pkcs11Hsm": "kms_iface.bench.impl_facade",
}


def parse_options(argv: Sequence[str], pin: str) -> Options:
    """The worker's command line (the PIN comes from stdin)."""
    parser = argparse.ArgumentParser(description="One implementation's benchmark worker.")
    parser.add_argument("--impl", choices=list(IMPLS), required=True)
    parser.add_argument("--module", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--sessions", type=int, default=1, help="the most threads a burst uses")
    parser.add_argument("--tasks", type=int, default=1, help="concurrent tasks (Pkcs11Hsm)")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.tasks < 1:
        parser.error("--sessions and --tasks must be at least 1")
    return Options(args.impl, args.module, args.token, pin, args.sessions, args.tasks)


def main(argv: Sequence[str]) -> int:
    """Set up, print the ready line, serve bursts; 1 with one line on stderr on a BenchError."""
    pin = sys.stdin.readline().rstrip("\r\n")
    options = parse_options(argv, pin)
    start: Callable[[Options], Runner] = importlib.import_module(IMPLS[options.impl]).start
    try:
        runner = start(options)
        try:
            emit(
                {"meta": {"impl": options.impl, "python": platform.python_version(), **runner.meta}}
            )
            serve(options.impl, runner, sys.stdin)
        finally:
            runner.close()
    except BenchError as exc:
        print(f"{options.impl}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
