"""A writer process for the concurrency and durability tests.

    python -m tests.store_conformance._writer BACKEND DESCRIPTOR WRITER_ID [--seconds S] [--mixed]

Opens the store, then writes (see ``workload.write_stream``) and prints ``<uid> <version>`` on
stdout, flushed, after each write is acknowledged. Without ``--seconds`` it writes until it is
killed; with it, it closes the store and exits 0 when the time is up. Any exception exits 1 with
its traceback on stderr.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from tests.store_conformance.backends import open_store
from tests.store_conformance.workload import write_stream


def _ack(uid: str, version: int) -> None:
    sys.stdout.write(f"{uid} {version}\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace) -> None:
    async with open_store(args.backend, args.descriptor) as store:
        _ack("ready", -1)
        await write_stream(
            store,
            args.writer_id,
            _ack,
            seconds=args.seconds,
            mixed=args.mixed,
            seed=hash(args.writer_id) & 0xFFFF,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("backend")
    parser.add_argument("descriptor")
    parser.add_argument("writer_id")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--mixed", action="store_true")
    anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    main()
