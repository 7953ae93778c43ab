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
- ``rsa_core`` / ``rsa_facade``: the same for an exported RSA private key (private exponent and
  primes, searched in both byte orders) and an RSA-OAEP plaintext.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kms_iface.pkcs11.softhsm import SoftHsmToken

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


def _probe_token(directory: Path) -> tuple[SoftHsmToken, int]:
    """A throwaway token for the façade scenarios (made before the module is loaded) and its
    slot."""
    from kms_iface.pkcs11 import Module
    from kms_iface.pkcs11.softhsm import create_token

    token = create_token(directory, label="kms-iface-probe")
    os.environ.update(token.environ())
    with Module(token.module) as module:
        return token, module.find_slot(token.label)


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
    from kms_iface.pkcs11_hsm import Pkcs11Hsm

    token, slot = _probe_token(directory)
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


RSA_SECRETS = ("private_exponent", "prime_1", "prime_2")


def _integer_needles(needles: dict[str, bytearray], name: str, value: object) -> None:
    """A secret integer as needles: big-endian as exported, and byte-reversed, the order of
    OpenSSL's BIGNUM words in memory on a little-endian machine."""
    big = bytearray(len(memoryview(value)))  # type: ignore[arg-type]
    memoryview(big)[:] = memoryview(value)  # type: ignore[arg-type]
    needles[name] = big
    needles[f"{name} (reversed)"] = bytearray(reversed(big))


def _rsa_core(directory: Path) -> dict[str, object]:
    """The RSA baseline: the private key's integers read into ``SecretBytes`` and an OAEP
    plaintext decrypted by the core; what remains is SoftHSM2's and OpenSSL's own."""
    from kms_iface import Mechanism
    from kms_iface.pkcs11 import Module, rsa_key_pair_templates
    from kms_iface.pkcs11 import constants as ck
    from kms_iface.pkcs11.softhsm import create_token
    from kms_iface.secrets import SecretBytes

    token = create_token(directory, label="kms-iface-probe")
    os.environ.update(token.environ())
    plaintext = _random(32)
    module = Module(token.module)
    pool = module.pool(module.find_slot(token.label), token.user_pin.encode())
    oaep = Mechanism.rsa_oaep(ck.CKM_SHA_1, ck.CKG_MGF1_SHA1)  # SoftHSM2 2.6: SHA-1 only
    with pool.session() as s:
        public, private = rsa_key_pair_templates(2048, sensitive=False, extractable=True)
        pk, sk = s.generate_key_pair(ck.CKM_RSA_PKCS_KEY_PAIR_GEN, public, private)
        values = s.get_attributes(sk, (ck.CKA_PRIVATE_EXPONENT, ck.CKA_PRIME_1, ck.CKA_PRIME_2))
        needles: dict[str, bytearray] = {}
        for name, value in zip(RSA_SECRETS, values, strict=True):
            assert isinstance(value, SecretBytes)
            _integer_needles(needles, name, value)
            value.zeroize()
        ciphertext = s.encrypt(oaep, pk, plaintext)
        with s.decrypt(oaep, sk, ciphertext) as plain:
            assert plain == plaintext
    needles["plaintext"] = plaintext
    open_hits = scan(needles)
    pool.close()
    module.close()
    return {"open": open_hits, "closed": scan(needles)}


def _rsa_facade(directory: Path) -> dict[str, object]:
    """``Pkcs11Hsm.export`` of an RSA private key (``RsaPrivateKeyMaterial``) and 16
    concurrent OAEP decryptions through the façade."""
    import anyio

    from kms_iface import CryptoAlgorithm, HsmKeypairAlgorithm
    from kms_iface.hsm import RsaPrivateKeyMaterial
    from kms_iface.pkcs11_hsm import Pkcs11Hsm

    token, slot = _probe_token(directory)
    plaintext = _random(32)
    oaep = CryptoAlgorithm.RSA_OAEP_SHA1
    result: dict[str, object] = {}

    async def main() -> None:
        async with Pkcs11Hsm(token.module, {slot: token.user_pin}) as hsm:
            sk_id, pk_id = KEY_ID, f"{KEY_ID}_pk"
            await hsm.create_keypair(
                slot, sk_id, pk_id, HsmKeypairAlgorithm.RSA, 2048, sensitive=False
            )
            exported = await hsm.export(slot, sk_id)
            assert exported is not None
            material = exported.key_material
            assert isinstance(material, RsaPrivateKeyMaterial)
            needles: dict[str, bytearray] = {}
            for name in RSA_SECRETS:
                _integer_needles(needles, name, getattr(material, name))
            result["held"] = scan(needles)  # the exported SecretBytes: the scan finds them
            for name in (*RSA_SECRETS, "exponent_1", "exponent_2", "coefficient"):
                getattr(material, name).zeroize()
            del exported, material
            sealed = await hsm.encrypt(slot, pk_id, oaep, plaintext)

            async def decrypt() -> None:
                with await hsm.decrypt(slot, sk_id, oaep, sealed.ciphertext) as plain:
                    assert plain == plaintext

            async with anyio.create_task_group() as group:
                for _ in range(16):
                    group.start_soon(decrypt)
            needles["plaintext"] = plaintext
            result["open"] = scan(needles)
        result["closed"] = scan(needles)

    anyio.run(main)
    return result


def _control(directory: Path) -> dict[str, object]:
    """The scan finds what it must: one stray ``bytes`` copy of each secret."""
    key, plaintext = _random(32), _random(64)
    stray = [bytes(key), bytes(plaintext)]
    result: dict[str, object] = {"open": scan({"key": key, "plaintext": plaintext})}
    del stray
    return result


SCENARIOS = {
    "core": _core,
    "facade": _facade,
    "rsa_core": _rsa_core,
    "rsa_facade": _rsa_facade,
    "control": _control,
}


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


@pytest.fixture(scope="module")
def rsa_core() -> dict[str, dict[str, list[str]]]:
    return run_scenario("rsa_core")


def test_rsa_core_path_leaves_no_copy(rsa_core: dict[str, dict[str, list[str]]]) -> None:
    """The private exponent and primes (either byte order) and the OAEP plaintext: none left,
    open or closed (SoftHSM2 clears OpenSSL's numbers after each operation)."""
    for phase in ("open", "closed"):
        assert all(not hits for hits in rsa_core[phase].values()), (phase, rsa_core[phase])


def test_rsa_export_and_decrypt_leave_no_more_copies_than_the_core(
    rsa_core: dict[str, dict[str, list[str]]],
) -> None:
    facade = run_scenario("rsa_facade")
    for name in RSA_SECRETS:  # the needles are findable while the export holds them
        assert len(facade["held"][name]) >= 1, (name, facade["held"])
    for phase in ("open", "closed"):
        for secret, hits in facade[phase].items():
            assert len(hits) <= len(rsa_core[phase][secret]), (phase, secret, facade[phase])


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="kms-iface-probe-") as tmp:
        print(json.dumps(SCENARIOS[sys.argv[1]](Path(tmp))))
