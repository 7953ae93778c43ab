"""No copy of an exported key or a decrypted plaintext outlives its wiping in our memory.

Each scenario runs in a subprocess of its own (this file as a script, so pytest's memory is not
involved): it makes a throwaway token, exports a non-sensitive extractable AES key and decrypts
a random plaintext, wipes both, then reads every readable, writable anonymous and heap region of
``/proc/self/maps`` through ``/proc/self/mem`` and counts the places that still hold the key or
the plaintext. The scan's own needles and read buffer are excluded by address.

- ``core``: the minimal path, the Cython core only (``get_attributes`` into a ``SecretBytes``,
  ``decrypt`` into a ``SecretBytes``). Whatever remains here is SoftHSM2's (or OpenSSL's) own.
- ``facade``: ``Pkcs11Hsm.export`` and ``Pkcs11Hsm.decrypt`` (worker threads, batching, the
  ``HsmObject`` msgspec structs). It must leave no more copies than ``core``.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CHUNK = 1 << 20
KEY_ID = "leak-probe"


def _address(buffer: bytearray) -> int:
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


def _random(n: int) -> bytearray:
    """Random bytes read straight into a bytearray (no intermediate ``bytes``)."""
    out = bytearray(n)
    fd = os.open("/dev/urandom", os.O_RDONLY)
    try:
        os.readv(fd, [out])
    finally:
        os.close(fd)
    return out


def scan(needles: dict[str, bytearray]) -> dict[str, list[str]]:
    """Where each needle occurs in rw anonymous and heap memory: ``region@address`` strings."""
    buffer = bytearray(CHUNK)
    overlap = max(len(n) for n in needles.values())
    excluded = [(_address(buffer), len(buffer))] + [(_address(n), len(n)) for n in needles.values()]
    hits: dict[str, list[str]] = {name: [] for name in needles}
    with open("/proc/self/maps", encoding="ascii") as maps:
        regions = [line.split() for line in maps]
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    try:
        for fields in regions:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else "anon"
            if not fields[1].startswith("rw") or name not in ("anon", "[heap]"):
                continue
            offset = start
            while offset < end:
                try:
                    got = os.preadv(fd, [memoryview(buffer)[: min(CHUNK, end - offset)]], offset)
                except OSError:
                    break
                for label, needle in needles.items():
                    at = buffer.find(needle, 0, got)
                    while at != -1:
                        where = offset + at
                        if not any(a <= where < a + n for a, n in excluded):
                            hits[label].append(f"{name}@{where:#x}")
                        at = buffer.find(needle, at + 1, got)
                if got < CHUNK:
                    break
                offset += got - overlap
    finally:
        os.close(fd)
        buffer[:] = bytes(len(buffer))
    for label in hits:  # a needle straddling two chunks is found twice
        hits[label] = sorted(set(hits[label]))
    return hits


def _core(directory: Path) -> dict[str, object]:
    from kms_iface import Mechanism
    from kms_iface.pkcs11 import Module, aes_key_template
    from kms_iface.pkcs11 import constants as ck
    from kms_iface.pkcs11.softhsm import create_token
    from kms_iface.secrets import SecretBytes

    token = create_token(directory, label="kms-iface-probe")
    os.environ.update(token.environ())
    plaintext = _random(64)
    module = Module(token.module)
    pool = module.pool(module.find_slot(token.label), token.user_pin.encode())
    with pool.session() as s:
        template = aes_key_template(256, token=True, sensitive=False, extractable=True)
        handle = s.generate_key(ck.CKM_AES_KEY_GEN, template)
        (value,) = s.get_attributes(handle, (ck.CKA_VALUE,))
        assert isinstance(value, SecretBytes)
        key = bytearray(len(value))
        memoryview(key)[:] = memoryview(value)  # see the note on strides
        value.zeroize()
        iv = bytes(12)
        ciphertext = s.encrypt(Mechanism.aes_gcm(iv), handle, plaintext)
        with s.decrypt(Mechanism.aes_gcm(iv), handle, ciphertext) as plain:
            assert plain == plaintext
    open_hits = scan({"key": key, "plaintext": plaintext})
    pool.close()
    module.close()
    return {"open": open_hits, "closed": scan({"key": key, "plaintext": plaintext})}


def _facade(directory: Path) -> dict[str, object]:
    import anyio

    from kms_iface import CryptoAlgorithm, HsmKeyAlgorithm
    from kms_iface.hsm import AesKeyMaterial
    from kms_iface.pkcs11 import Module
    from kms_iface.pkcs11.softhsm import create_token
    from kms_iface.pkcs11_hsm import Pkcs11Hsm

    token = create_token(directory, label="kms-iface-probe")
    os.environ.update(token.environ())
    with Module(token.module) as module:
        slot = module.find_slot(token.label)
    plaintext = _random(64)
    gcm = CryptoAlgorithm.AES_GCM
    result: dict[str, object] = {}

    async def main() -> None:
        async with Pkcs11Hsm(token.module, {slot: token.user_pin}) as hsm:
            await hsm.create_key(slot, KEY_ID, HsmKeyAlgorithm.AES, 256, sensitive=False)
            exported = await hsm.export(slot, KEY_ID)
            assert exported is not None and isinstance(exported.key_material, AesKeyMaterial)
            key = bytearray(len(exported.key_material.key))
            memoryview(key)[:] = memoryview(exported.key_material.key)
            exported.key_material.key.zeroize()
            del exported
            sealed = await hsm.encrypt(slot, KEY_ID, gcm, plaintext)
            assert sealed.iv is not None and sealed.tag is not None
            blob = sealed.iv + sealed.ciphertext + sealed.tag

            async def decrypt() -> None:  # concurrent: the batched crypt_many path too
                with await hsm.decrypt(slot, KEY_ID, gcm, blob) as plain:
                    assert plain == plaintext

            async with anyio.create_task_group() as group:
                for _ in range(16):
                    group.start_soon(decrypt)
            result["open"] = scan({"key": key, "plaintext": plaintext})
        result["closed"] = scan({"key": key, "plaintext": plaintext})

    anyio.run(main)
    return result


def _control(directory: Path) -> dict[str, object]:
    """The scan finds what it must: one stray ``bytes`` copy of each secret."""
    key, plaintext = _random(32), _random(64)
    stray = [bytes(key), bytes(plaintext)]
    result: dict[str, object] = {"open": scan({"key": key, "plaintext": plaintext})}
    del stray
    return result


SCENARIOS = {"core": _core, "facade": _facade, "control": _control}


def run_scenario(name: str) -> dict[str, dict[str, list[str]]]:
    """Run one scenario in a fresh interpreter; its hits by phase (open/closed) and secret."""
    done = subprocess.run(
        [sys.executable, __file__, name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, dict[str, list[str]]] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def core() -> dict[str, dict[str, list[str]]]:
    return run_scenario("core")


def test_core_path_leaves_no_copy_of_ours(core: dict[str, dict[str, list[str]]]) -> None:
    """After close, the module is finalised: nothing of either secret may remain."""
    assert core["closed"] == {"key": [], "plaintext": []}


def test_scan_finds_a_stray_copy() -> None:
    hits = run_scenario("control")["open"]
    assert len(hits["key"]) == 1 and len(hits["plaintext"]) == 1, hits


def test_core_path_leaves_no_copy_while_open(core: dict[str, dict[str, list[str]]]) -> None:
    """SoftHSM2 wipes its own temporaries (SecureAllocator): none remains with the token open."""
    assert core["open"] == {"key": [], "plaintext": []}


def test_facade_leaves_no_more_copies_than_the_core(core: dict[str, dict[str, list[str]]]) -> None:
    facade = run_scenario("facade")
    for phase in ("open", "closed"):
        for secret in ("key", "plaintext"):
            assert len(facade[phase][secret]) <= len(core[phase][secret]), (phase, secret, facade)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="kms-iface-probe-") as tmp:
        print(json.dumps(SCENARIOS[sys.argv[1]](Path(tmp))))
