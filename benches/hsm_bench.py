"""The async HSM façade and the warm key lookup, as ratios to the sync core in the same run.

Rows (a throwaway SoftHSM2 token, session-independent token keys):

- ``sync core``: one thread, ``hsm_ops.encrypt`` (AES-GCM, 4 KiB) on a pooled session with a
  pre-resolved key handle: the rate the façade is measured against.
- ``Pkcs11Hsm, N tasks``: N concurrent tasks on one event loop calling ``await hsm.encrypt(slot,
  key_id, AES_GCM, data)`` (key by id: handle cache, worker threads, batching, wake-ups).
- ``warm lookup``: AES-GCM 64 B through the façade's sync path by id (``slot_state(...).encrypt``,
  the handle cache warm) cycling over K token keys, against ``hsm_ops.encrypt`` with the
  pre-resolved handles of the same keys: the cost of finding a key among K.

Rounds interleave the rows (0.25 s bursts, order rotated); a ratio is the median of the
per-round ratios to the sync burst of the same round, which cancels this VM's drift.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from kms_iface import CryptoAlgorithm, HsmKeyAlgorithm
from kms_iface.pkcs11 import Module, find_keys
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.hsm_ops import encrypt
from kms_iface.pkcs11.softhsm import create_token, find_softhsm2_module
from kms_iface.pkcs11.templates import aes_key_template
from kms_iface.pkcs11_hsm import Pkcs11Hsm

PIN = "1234"
GCM = CryptoAlgorithm.AES_GCM
TASKS = (1, 8, 32)


def timed(run: Callable[[float], int], duration: float) -> float:
    """Operations per second of ``run(deadline)``, which returns how many it did."""
    start = time.perf_counter()
    done = run(start + duration)
    return done / (time.perf_counter() - start)


async def async_rate(task: Callable[[], Awaitable[object]], tasks: int, duration: float) -> float:
    count = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await task()
            count += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(worker)
    return count / (time.perf_counter() - start)


async def bench(keys: int, rounds: int, duration: float) -> None:
    library = find_softhsm2_module()
    with tempfile.TemporaryDirectory() as tmp:
        token = create_token(Path(tmp), label="hsm-bench", user_pin=PIN)
        os.environ.update(token.environ())
        module = Module(library)
        slot = module.find_slot("hsm-bench")
        async with Pkcs11Hsm(library, {slot: PIN}) as hsm:
            await hsm.create_key(slot, "bench-aes", HsmKeyAlgorithm.AES, 256, False)
            state = hsm.slot_state(slot)
            pool = state.pool
            ids = [f"lookup-{index:04d}" for index in range(keys)]
            with pool.session() as session:
                for key_id in ids:
                    session.generate_key(
                        ck.CKM_AES_KEY_GEN, aes_key_template(256, label=key_id, key_id=key_id)
                    )
            handles = [pool.call(find_keys, label=key_id)[0] for key_id in ids]
            (bench_handle,) = pool.call(find_keys, label="bench-aes")
            data_4k = os.urandom(4096)
            data_64 = os.urandom(64)
            id_bytes = [key_id.encode() for key_id in ids]
            # Warm the façade's cache for every key once.
            with pool.session() as session:
                for raw_id in id_bytes:
                    state.encrypt(session, raw_id, GCM, data_64, None)

            def sync_core(deadline: float) -> int:
                done = 0
                with pool.session() as session:
                    while time.perf_counter() < deadline:
                        encrypt(session, bench_handle, GCM, data_4k)
                        done += 1
                return done

            def by_handle(deadline: float) -> int:
                done = 0
                with pool.session() as session:
                    while time.perf_counter() < deadline:
                        encrypt(session, handles[done % keys], GCM, data_64)
                        done += 1
                return done

            def by_id(deadline: float) -> int:
                done = 0
                with pool.session() as session:
                    while time.perf_counter() < deadline:
                        state.encrypt(session, id_bytes[done % keys], GCM, data_64, None)
                        done += 1
                return done

            async def facade_op() -> object:
                return await hsm.encrypt(slot, "bench-aes", GCM, data_4k)

            names = ["sync core", *(f"Pkcs11Hsm, {n} tasks" for n in TASKS)]
            rates: dict[str, list[float]] = {name: [] for name in names}
            ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
            lookup: dict[str, list[float]] = {"by handle": [], "by id": []}
            for index in range(rounds):
                order = names[index % len(names) :] + names[: index % len(names)]
                got: dict[str, float] = {}
                for name in order:
                    if name == "sync core":
                        got[name] = await anyio.to_thread.run_sync(timed, sync_core, duration)
                    else:
                        tasks = int(name.split(", ")[1].split()[0])
                        got[name] = await async_rate(facade_op, tasks, duration)
                for name, rate in got.items():
                    rates[name].append(rate)
                for name in names[1:]:
                    ratios[name].append(got[name] / got["sync core"])
                pair = [("by handle", by_handle), ("by id", by_id)]
                for label, run in pair if index % 2 else reversed(pair):
                    lookup[label].append(await anyio.to_thread.run_sync(timed, run, duration))
        module.close()

    print(f"SoftHSM2 token, AES-256 token keys, {rounds} interleaved rounds of {duration} s bursts")
    print()
    print("| row | ops/s (median) | ratio to the sync core (median per round) |")
    print("| --- | ---: | ---: |")
    for name in names:
        ratio = "1.00x" if name == "sync core" else f"{statistics.median(ratios[name]):.2f}x"
        label = f"{name} (AES-GCM 4 KiB)"
        print(f"| {label} | {statistics.median(rates[name]):,.0f} | {ratio} |")
    warm = [b / a for a, b in zip(lookup["by handle"], lookup["by id"], strict=True)]
    print(
        f"| pre-resolved handles, {keys} keys (AES-GCM 64 B) | "
        f"{statistics.median(lookup['by handle']):,.0f} | 1.00x |"
    )
    print(
        f"| warm lookup by id among {keys} token keys (AES-GCM 64 B) | "
        f"{statistics.median(lookup['by id']):,.0f} | {statistics.median(warm):.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000, help="token keys for the lookup row")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--duration", type=float, default=0.25, help="seconds per burst")
    parser.add_argument("--quick", action="store_true", help="100 keys, 3 rounds of 0.1 s")
    args = parser.parse_args()
    if args.quick:
        args.keys, args.rounds, args.duration = 100, 3, 0.1
    anyio.run(bench, args.keys, args.rounds, args.duration)


if __name__ == "__main__":
    main()
