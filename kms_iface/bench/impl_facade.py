"""The async façade: ``Pkcs11Hsm`` called from N concurrent asyncio tasks (``--tasks N``).

Each task awaits ``hsm.encrypt(slot, key_id, AES_GCM, data)`` (or ``decrypt`` of ``iv ‖ ct ‖
tag``) in a loop: key lookup by id (the handle cache), the slot's worker threads, batching and
wake-ups are all in the measurement. The key is an AES-256 token key made for this worker
(``Pkcs11Hsm`` finds keys by id) and deleted when the worker closes. Only the AES-GCM cases
exist; one event loop (``asyncio.Runner``) lives for the whole worker.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

from kms_iface import CryptoAlgorithm, HsmKeyAlgorithm, __version__
from kms_iface.bench.protocol import (
    AES_KEY_BYTES,
    WARMUP_CALLS,
    Case,
    Options,
    Timing,
    check_output,
    payload,
)
from kms_iface.pkcs11 import Module
from kms_iface.pkcs11_hsm import Pkcs11Hsm

GCM = CryptoAlgorithm.AES_GCM

Call = Callable[[], Awaitable[object]]


class FacadeRunner:
    """``Pkcs11Hsm`` on one event loop; each burst runs ``tasks`` tasks until the deadline."""

    def __init__(self, options: Options) -> None:
        self.tasks = options.tasks
        self.meta = {"package": "kms_iface", "version": __version__, "tasks": str(options.tasks)}
        self._loop = asyncio.Runner()
        self._key_id = f"kms-iface-bench-{os.getpid()}"
        with Module(options.module) as module:
            self._slot = module.find_slot(options.token)
        self._hsm = Pkcs11Hsm(options.module, {self._slot: options.pin})
        self._loop.run(
            self._hsm.create_key(
                self._slot, self._key_id, HsmKeyAlgorithm.AES, AES_KEY_BYTES * 8, False
            )
        )
        self._calls: dict[tuple[str, int], Call] = {}

    async def _make_call(self, op: str, size: int) -> Call | None:
        hsm, slot, key, data = self._hsm, self._slot, self._key_id, payload(size)
        if op == "gcm_enc":

            async def encrypt() -> int:
                out = await hsm.encrypt(slot, key, GCM, data)
                return len(out.ciphertext) + len(out.tag or b"")

            return encrypt
        if op == "gcm_dec":
            sealed = await hsm.encrypt(slot, key, GCM, data)
            wrapped = (sealed.iv or b"") + sealed.ciphertext + (sealed.tag or b"")
            return lambda: hsm.decrypt(slot, key, GCM, wrapped)
        return None

    async def _burst(self, case: Case, duration: float) -> Timing | None:
        key = (case.op, case.size)
        if key not in self._calls:
            made = await self._make_call(case.op, case.size)
            if made is None:
                return None
            self._calls[key] = made
        call = self._calls[key]
        check_output(case.op, payload(case.size), await call())
        for _ in range(WARMUP_CALLS - 1):
            await call()
        count = 0
        start = time.perf_counter()
        deadline = start + duration

        async def loop() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await call()
                count += 1

        async with asyncio.TaskGroup() as group:
            for _ in range(self.tasks):
                group.create_task(loop())
        return count, time.perf_counter() - start

    def run(self, case: Case, duration: float) -> Timing | None:
        return self._loop.run(self._burst(case, duration))

    def close(self) -> None:
        """Delete the token key, close the façade and its event loop."""
        try:
            self._loop.run(self._hsm.delete(self._slot, self._key_id))
            self._loop.run(self._hsm.aclose())
        finally:
            self._loop.close()


def start(options: Options) -> FacadeRunner:
    return FacadeRunner(options)
