"""Soak: N mixed operations through the async HSM façade and the LMDB store, memory sampled.

Each task cycles over five operations: AES-GCM ``encrypt`` and ``decrypt`` (the plaintext wiped)
through ``Pkcs11Hsm`` on a throwaway SoftHSM2 token, ``get_key_type`` (the handle cache),
``LmdbStore.update_object`` of one of a fixed set of uids (so the file-backed map does not grow)
and ``retrieve`` of it. After every 1/``samples`` of the run, ``RssAnon`` (``/proc/self/status``),
tracemalloc's current size and the pool's open-session count (the pool is sized to the task
count and filled before the run, so the count is constant unless a session leaks) are sampled (after
``gc.collect()``). The first ``--warmup`` fraction of the run is warm-up: growth is the median
of the last ``ENDS`` samples less the median of the first ``ENDS`` after warm-up (one sample
swings by some 20 KB of tracemalloc with what the loop and the workers hold at that moment; a
leak is a trend, which the medians keep).

    python benches/soak.py                 # 1,000,000 operations
    python benches/soak.py --ops 50000 --json soak.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio

from kms_iface import CryptoAlgorithm, HsmKeyAlgorithm, kmip
from kms_iface.kmip import Attributes
from kms_iface.pkcs11 import Module
from kms_iface.pkcs11.softhsm import create_token
from kms_iface.pkcs11_hsm import Pkcs11Hsm
from kms_iface.stores import LmdbStore

MIB = 1 << 20
ENDS = 5
"""Samples whose median is the baseline (the first after warm-up) and the end (the last)."""
GCM = CryptoAlgorithm.AES_GCM
OWNER = "soak@example.org"
OPERATIONS = ("encrypt", "decrypt", "get_key_type", "store update", "store retrieve")


@dataclass
class Sample:
    """One measurement point."""

    ops: int
    rss_anon: int
    traced: int
    sessions: int
    seconds: float


@dataclass
class SoakResult:
    """Every sample, and the growth after warm-up."""

    ops: int
    tasks: int
    warmup_ops: int
    pool_size: int = 0
    samples: list[Sample] = field(default_factory=list)

    def _after_warmup(self) -> list[Sample]:
        return [s for s in self.samples if s.ops >= self.warmup_ops]

    def baseline(self, name: str) -> int:
        """``rss_anon`` or ``traced`` at the start: the median of the first ``ENDS`` samples
        after warm-up."""
        return int(statistics.median(getattr(s, name) for s in self._after_warmup()[:ENDS]))

    def final(self, name: str) -> int:
        """The same at the end: the median of the last ``ENDS`` samples."""
        return int(statistics.median(getattr(s, name) for s in self._after_warmup()[-ENDS:]))

    def growth(self, name: str) -> int:
        """Bytes gained by ``rss_anon`` or ``traced`` from the baseline to the end."""
        return self.final(name) - self.baseline(name)

    def sessions(self) -> list[int]:
        """Open-session counts of the samples from the baseline on."""
        return [s.sessions for s in self.samples if s.ops >= self.warmup_ops]

    def to_json(self) -> dict[str, object]:
        return {
            "ops": self.ops,
            "tasks": self.tasks,
            "warmup_ops": self.warmup_ops,
            "pool_size": self.pool_size,
            "rss_anon_growth": self.growth("rss_anon"),
            "traced_growth": self.growth("traced"),
            "samples": [asdict(s) for s in self.samples],
        }


def rss_anon() -> int:
    """Anonymous resident memory of this process, in bytes (``RssAnon``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


async def soak(
    ops: int, directory: Path, *, tasks: int = 8, samples: int = 20, warmup: float = 0.1
) -> SoakResult:
    """Run ``ops`` operations on a new token and store under ``directory``."""
    token = create_token(directory / "softhsm", label="kms-iface-soak")
    os.environ.update(token.environ())
    with Module(token.module) as module:
        slot = module.find_slot(token.label)
    result = SoakResult(ops, tasks, int(ops * warmup))
    step = max(1, ops // samples)
    uids = [f"soak-{i}" for i in range(64)]
    started = time.perf_counter()
    async with (
        Pkcs11Hsm(token.module, {slot: token.user_pin}, pool_size=tasks) as hsm,
        LmdbStore(directory / "store", durable=False, map_size=256 * MIB) as store,
    ):
        await hsm.create_key(slot, "soak-key", HsmKeyAlgorithm.AES, 256, sensitive=True)
        for uid in uids:
            key = kmip.symmetric_key_object(os.urandom(32), Attributes(comment=uid))
            await store.create(uid, OWNER, key, key.attributes() or Attributes(), {"soak"})
        pool = hsm.slot_state(slot).pool
        result.pool_size = pool.size
        # Open every session the pool may lend now: the count is then constant unless one leaks.
        held = [pool.acquire() for _ in range(pool.size)]
        for session in held:
            pool.release(session)
        del held
        payload = os.urandom(256)
        sealed = await hsm.encrypt(slot, "soak-key", GCM, payload)
        assert sealed.iv is not None and sealed.tag is not None
        blob = sealed.iv + sealed.ciphertext + sealed.tag

        async def one(n: int) -> None:
            kind = n % len(OPERATIONS)
            if kind == 0:
                await hsm.encrypt(slot, "soak-key", GCM, payload)
            elif kind == 1:
                with await hsm.decrypt(slot, "soak-key", GCM, blob) as plain:
                    if plain != payload:
                        raise AssertionError("wrong plaintext")
            elif kind == 2:
                await hsm.get_key_type(slot, "soak-key")
            else:
                uid = uids[n // len(OPERATIONS) % len(uids)]
                if kind == 3:
                    key = kmip.symmetric_key_object(os.urandom(32), Attributes(comment=str(n)))
                    await store.update_object(uid, key, key.attributes() or Attributes())
                elif await store.retrieve(uid) is None:
                    raise AssertionError(f"{uid} vanished")

        async def worker(first: int, last: int) -> None:
            for n in range(first, last):
                await one(n)

        def sample(done: int) -> None:
            gc.collect()
            result.samples.append(
                Sample(
                    done,
                    rss_anon(),
                    tracemalloc.get_traced_memory()[0],
                    pool.open_sessions,
                    time.perf_counter() - started,
                )
            )

        sample(0)
        done = 0
        while done < ops:
            chunk = min(step, ops - done)
            share = -(-chunk // tasks)
            async with anyio.create_task_group() as group:
                for first in range(done, done + chunk, share):
                    group.start_soon(worker, first, min(first + share, done + chunk))
            done += chunk
            sample(done)
    return result


def table(result: SoakResult) -> str:
    """The Markdown report: samples, then growth after warm-up."""
    lines = [
        f"soak: {result.ops:,} operations ({', '.join(OPERATIONS)}), {result.tasks} tasks, "
        f"warm-up {result.warmup_ops:,}",
        "",
        "| ops | seconds | RssAnon MiB | tracemalloc MiB | open sessions |",
        "|---:|---:|---:|---:|---:|",
    ]
    for s in result.samples:
        lines.append(
            f"| {s.ops:,} | {s.seconds:.1f} | {s.rss_anon / MIB:.2f} | {s.traced / MIB:.3f} "
            f"| {s.sessions} |"
        )
    lines += [
        "",
        f"| after warm-up (medians of {ENDS} samples) | baseline MiB | final MiB | growth MiB "
        "| growth % |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, name in (("RssAnon", "rss_anon"), ("tracemalloc", "traced")):
        first = result.baseline(name)
        grown = result.growth(name)
        lines.append(
            f"| {label} | {first / MIB:.2f} | {(first + grown) / MIB:.2f} | {grown / MIB:+.3f} "
            f"| {100 * grown / first:+.2f} |"
        )
    counts = sorted(set(result.sessions()))
    lines.append(
        f"\nopen sessions after warm-up: {counts} (constant: {len(counts) == 1}; "
        f"pool size {result.pool_size})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=1_000_000, help="operations (default 1e6)")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent tasks (default 8)")
    parser.add_argument("--samples", type=int, default=20, help="sampling points (default 20)")
    parser.add_argument("--warmup", type=float, default=0.1, help="warm-up fraction (0.1)")
    parser.add_argument("--json", type=Path, help="write the samples and growth here")
    args = parser.parse_args(argv)
    if args.ops < args.samples or not 0 <= args.warmup < 1:
        parser.error("--ops must be at least --samples and --warmup in [0, 1)")
    tracemalloc.start()
    with tempfile.TemporaryDirectory(prefix="kms-iface-soak-") as tmp:
        result = anyio.run(
            lambda: soak(
                args.ops, Path(tmp), tasks=args.tasks, samples=args.samples, warmup=args.warmup
            )
        )
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_json(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
