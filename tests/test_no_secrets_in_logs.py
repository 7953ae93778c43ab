"""No PIN, key or plaintext in any log record, exception text or command-line output.

A subprocess of its own (this file as a script; a token with a distinctive PIN under its own
``SOFTHSM2_CONF``) sets every ``kms_iface`` logger to DEBUG, captures every record (message and
formatted traceback) and every exception's ``str``, ``repr`` and traceback, runs the wrong-PIN,
export, decrypt (good and tampered), wrap/unwrap (``Database.wrap_key`` with an HSM KEK) and
``python -m kms_iface --debug ...`` paths, then looks for each secret in raw, ``repr``, hex
(both cases) and base64 (standard and URL-safe) forms. It prints the leaks it found as JSON.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

ADMIN = "admin@example.org"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))


def forms(secret: bytes | str) -> list[str]:
    """The ways a secret could be written out."""
    if isinstance(secret, str):
        return [secret]
    encoded = [base64.b64encode(secret), base64.urlsafe_b64encode(secret)]
    return [
        secret.decode("latin-1"),
        repr(secret)[2:-1],
        secret.hex(),
        secret.hex().upper(),
        secret.hex(" "),
        *(e.decode().rstrip("=") for e in encoded),
    ]


def leaks(texts: list[str], named: dict[str, bytes | str]) -> list[str]:
    """``name`` for every secret one of whose forms occurs in one of ``texts``."""
    blob = "\n".join(texts)
    return sorted(name for name, value in named.items() if any(f in blob for f in forms(value)))


def _probe(directory: Path) -> dict[str, object]:
    import anyio

    from kms_iface import CryptoAlgorithm, Database, HsmKeyAlgorithm
    from kms_iface.config import parse_config
    from kms_iface.hsm import AesKeyMaterial
    from kms_iface.kmip import Attributes, CryptographicAlgorithm, symmetric_key_object
    from kms_iface.pkcs11 import Module
    from kms_iface.pkcs11.softhsm import create_token
    from kms_iface.pkcs11_hsm import Pkcs11Hsm

    pin = "pin-" + secrets.token_urlsafe(12)
    wrong_pin = "wrong-" + secrets.token_urlsafe(12)
    token = create_token(directory / "softhsm", label="kms-iface-logs", user_pin=pin)
    os.environ.update(token.environ())
    with Module(token.module) as module:
        slot = module.find_slot(token.label)
    capture = _Capture()
    logging.getLogger().addHandler(capture)
    logging.getLogger().setLevel(logging.DEBUG)
    for name in ["kms_iface", *logging.root.manager.loggerDict]:
        if name.startswith("kms_iface"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    texts = capture.texts
    named: dict[str, bytes | str] = {"pin": pin, "wrong pin": wrong_pin}
    plaintext = os.urandom(48)
    named["plaintext"] = plaintext
    gcm = CryptoAlgorithm.AES_GCM

    async def failing(call: Callable[[], Awaitable[object]]) -> None:
        try:
            await call()
        except Exception as exc:  # every text an error can show
            texts.extend([str(exc), repr(exc), *traceback.format_exception(exc)])
        else:
            raise AssertionError("expected a failure")

    async def main() -> None:
        async with Pkcs11Hsm(token.module, {slot: wrong_pin}) as hsm:
            await failing(lambda: hsm.encrypt(slot, "k", gcm, plaintext))
        async with Pkcs11Hsm(token.module, {slot: pin}) as hsm:
            await hsm.create_key(slot, "plain-key", HsmKeyAlgorithm.AES, 256, sensitive=False)
            exported = await hsm.export(slot, "plain-key")
            assert exported is not None and isinstance(exported.key_material, AesKeyMaterial)
            named["exported key"] = bytes(exported.key_material.key)
            texts.extend([repr(exported), str(exported)])
            sealed = await hsm.encrypt(slot, "plain-key", gcm, plaintext)
            assert sealed.iv is not None and sealed.tag is not None
            blob = sealed.iv + sealed.ciphertext + sealed.tag
            with await hsm.decrypt(slot, "plain-key", gcm, blob) as plain:
                texts.extend([repr(plain), str(plain)])
            tampered = blob[:-1] + bytes([blob[-1] ^ 1])
            await failing(lambda: hsm.decrypt(slot, "plain-key", gcm, tampered))
            await failing(lambda: hsm.decrypt(slot, "plain-key", gcm, blob, aad=b"x"))
        config = parse_config(
            f"""
            [default_store]
            kind = "lmdb"
            path = "{directory}/store"

            [[hsm_instances]]
            model = "softhsm2"
            library = "{token.module}"
            admins = ["{ADMIN}"]
            slots = [{{ id = {slot}, password = "{pin}" }}]
            """
        )
        async with Database.from_config(config) as db:
            kek = f"hsm::{slot}::kek"
            aes = Attributes(
                cryptographic_algorithm=CryptographicAlgorithm.AES,
                cryptographic_length=256,
                sensitive=True,
            )
            await db.create(kek, ADMIN, symmetric_key_object(bytes(32)), aes, ())
            key = os.urandom(32)
            named["wrapped key"] = key
            uid = await db.create(None, ADMIN, symmetric_key_object(key), Attributes(), ())
            await db.wrap_key(uid, kek, ADMIN)
            with await db.unwrap_key(uid, ADMIN) as material:
                assert material == key
            await failing(lambda: db.wrap_key(uid, f"hsm::{slot}::missing", ADMIN))
            await failing(lambda: db.unwrap_key(uid, "mallory"))

    anyio.run(main)
    _cli(token.module, slot, pin, wrong_pin, directory, texts, named)
    return {"leaks": leaks(texts, named), "texts": len(texts), "secrets": sorted(named)}


def _cli(
    library: str,
    slot: int,
    pin: str,
    wrong_pin: str,
    directory: Path,
    texts: list[str],
    named: dict[str, bytes | str],
) -> None:
    env = {**os.environ, "GOOD_PIN": pin, "BAD_PIN": wrong_pin}
    where = ["--module", library, "--slot", str(slot)]
    plain, sealed, back, key = (directory / n for n in ("plain", "sealed", "back", "key"))
    file_plain = os.urandom(5000)
    named["file plaintext"] = file_plain
    plain.write_bytes(file_plain)

    def cli(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "kms_iface", "--debug", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        texts.extend([done.stdout, done.stderr])

    good = [*where, "--pin-env", "GOOD_PIN"]
    cli("keys", "list", *where, "--pin-env", "BAD_PIN")
    cli("keys", "create", *good, "--type", "aes", "--id", "cli-key")
    cli("keys", "export", *good, "--id", "cli-key", "--out", str(key))
    named["cli exported key"] = key.read_bytes()
    cli("keys", "export", *good, "--id", "cli-key", "--out", str(key))  # exists: fails
    cli("encrypt", *good, "--key", "cli-key", "--in", str(plain), "--out", str(sealed))
    cli("decrypt", *good, "--key", "cli-key", "--in", str(sealed), "--out", str(back))
    assert back.read_bytes() == file_plain
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 1
    sealed.write_bytes(data)
    cli("decrypt", *good, "--key", "cli-key", "--in", str(sealed), "--out", str(back), "--force")
    cli("keys", "list", *good)


def test_forms_catch_a_leak() -> None:
    key = os.urandom(16)
    for text in forms(key):
        assert leaks([f"error: {text}!"], {"key": key}) == ["key"]
    assert leaks([f"got {key!r}"], {"key": key}) == ["key"]
    assert leaks(["nothing"], {"key": key}) == []


def test_no_secret_in_logs_errors_or_cli_output() -> None:
    done = subprocess.run(
        [sys.executable, __file__],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    expected = ["pin", "wrong pin", "plaintext", "exported key", "wrapped key", "file plaintext"]
    assert result["secrets"] == sorted([*expected, "cli exported key"])
    assert result["texts"] > 20
    assert result["leaks"] == [], result


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="kms-iface-logs-") as tmp:
        print(json.dumps(_probe(Path(tmp))))
