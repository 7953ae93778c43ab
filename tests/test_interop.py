"""Interoperability with OpenSC's pkcs11-tool, an independent PKCS#11 client: it lists and uses
the keys kms_iface makes on the token, and kms_iface finds and uses a key pkcs11-tool makes."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kms_iface.pkcs11 import Mechanism, Session, SessionPool
from kms_iface.pkcs11 import constants as ck
from kms_iface.pkcs11.softhsm import SoftHsmToken
from kms_iface.pkcs11.templates import aes_key_template, find_keys, rsa_key_pair_templates

AES_LABEL, AES_ID = "interop-aes", b"\x01\x02"
RSA_LABEL, RSA_ID = "interop-rsa", b"\x03\x04"
TOOL_LABEL, TOOL_ID = "p11tool-aes", b"\x0a\x0b"
MESSAGE = b"written by kms_iface, read by pkcs11-tool"


@dataclass(frozen=True)
class ListedObject:
    """One object of ``pkcs11-tool -O``: its heading line and its indented attributes."""

    heading: str
    attributes: dict[str, str]


class Pkcs11Tool:
    """pkcs11-tool, logged in to the test token through the token's own SoftHSM2 config."""

    def __init__(self, executable: str, token: SoftHsmToken) -> None:
        self._token = token
        self._command = [
            executable,
            "--module",
            token.module,
            "--token-label",
            token.label,
            "--login",
            "--pin",
            token.user_pin,
        ]

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [*self._command, *args],
            env={**os.environ, **self._token.environ()},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"pkcs11-tool {' '.join(args)} failed:\n{done.stderr}"
        return done.stdout

    def list_objects(self) -> list[ListedObject]:
        listed: list[ListedObject] = []
        for line in self.run("--list-objects").splitlines():
            if not line.strip():
                continue
            if not line[0].isspace():
                listed.append(ListedObject(line.strip(), {}))
            elif listed and ":" in line:
                name, value = line.split(":", 1)
                listed[-1].attributes[name.strip()] = value.strip()
        return listed


def listed_as(tool: Pkcs11Tool, heading: str, label: str, key_id: bytes) -> bool:
    return any(
        listed.heading.startswith(heading)
        and listed.attributes.get("label") == label
        and listed.attributes.get("ID") == key_id.hex()
        for listed in tool.list_objects()
    )


def find_one(s: Session, label: str, object_class: int) -> int:
    handles = find_keys(s, label=label, object_class=object_class)
    assert len(handles) == 1, f"{len(handles)} objects labelled {label!r} are visible"
    return handles[0]


def destroy_labelled(s: Session, *labels: str) -> None:
    for label in labels:
        for handle in find_keys(s, label=label):
            s.destroy_object(handle)


def make_interop_keys(s: Session) -> None:
    s.generate_key(ck.CKM_AES_KEY_GEN, aes_key_template(256, label=AES_LABEL, key_id=AES_ID))
    s.generate_key_pair(
        ck.CKM_RSA_PKCS_KEY_PAIR_GEN,
        *rsa_key_pair_templates(
            2048,
            label=RSA_LABEL,
            key_id=RSA_ID,
            public_label=RSA_LABEL,
            public_key_id=RSA_ID,
        ),
    )


@pytest.fixture(scope="module")
def tool(token: SoftHsmToken) -> Pkcs11Tool:
    executable = shutil.which("pkcs11-tool")
    if executable is None:
        pytest.fail("pkcs11-tool is missing: install Debian's opensc package (make system-deps)")
    return Pkcs11Tool(executable, token)


@pytest.fixture
def interop_keys(pool: SessionPool) -> Iterator[None]:
    """An AES-256 token key and an RSA-2048 token key pair made by kms_iface."""
    pool.call(make_interop_keys, idempotent=False)
    yield
    pool.call(destroy_labelled, AES_LABEL, RSA_LABEL)


@pytest.mark.usefixtures("interop_keys")
def test_pkcs11_tool_lists_keys_made_here(tool: Pkcs11Tool) -> None:
    assert listed_as(tool, "Secret Key Object; AES length 32", AES_LABEL, AES_ID)
    assert listed_as(tool, "Private Key Object; RSA", RSA_LABEL, RSA_ID)
    assert listed_as(tool, "Public Key Object; RSA 2048 bits", RSA_LABEL, RSA_ID)


def encrypt_cbc(s: Session, iv: bytes) -> bytes:
    return s.encrypt(
        Mechanism.aes_cbc(iv, pad=True), find_one(s, AES_LABEL, ck.CKO_SECRET_KEY), MESSAGE
    )


def sign(s: Session) -> bytes:
    key = find_one(s, RSA_LABEL, ck.CKO_PRIVATE_KEY)
    return s.sign(ck.CKM_SHA256_RSA_PKCS, key, MESSAGE)


@pytest.mark.usefixtures("interop_keys")
def test_pkcs11_tool_uses_keys_made_here(
    tool: Pkcs11Tool, pool: SessionPool, tmp_path: Path
) -> None:
    iv = os.urandom(16)
    (tmp_path / "ciphertext").write_bytes(pool.call(encrypt_cbc, iv))
    (tmp_path / "message").write_bytes(MESSAGE)
    (tmp_path / "signature").write_bytes(pool.call(sign))
    tool.run(
        "--decrypt",
        "--mechanism",
        "AES-CBC-PAD",
        "--iv",
        iv.hex(),
        "--id",
        AES_ID.hex(),
        "--input-file",
        str(tmp_path / "ciphertext"),
        "--output-file",
        str(tmp_path / "plaintext"),
    )
    assert (tmp_path / "plaintext").read_bytes() == MESSAGE
    verdict = tool.run(
        "--verify",
        "--mechanism",
        "SHA256-RSA-PKCS",
        "--id",
        RSA_ID.hex(),
        "--input-file",
        str(tmp_path / "message"),
        "--signature-file",
        str(tmp_path / "signature"),
    )
    assert "Signature is valid" in verdict


def gcm_round_trip(s: Session) -> tuple[bytes | None, bytes]:
    """The CKA_ID of the key pkcs11-tool made, and MESSAGE through AES-GCM with it."""
    key = find_one(s, TOOL_LABEL, ck.CKO_SECRET_KEY)
    (key_id,) = s.get_attributes(key, [ck.CKA_ID])
    mechanism = Mechanism.aes_gcm(os.urandom(12))
    plaintext = s.decrypt(mechanism, key, s.encrypt(mechanism, key, MESSAGE))
    return (None if key_id is None else bytes(key_id)), bytes(plaintext)


def test_key_made_by_pkcs11_tool_is_usable_here(tool: Pkcs11Tool, pool: SessionPool) -> None:
    tool.run("--keygen", "--key-type", "aes:32", "--label", TOOL_LABEL, "--id", TOOL_ID.hex())
    try:
        assert pool.call(gcm_round_trip) == (TOOL_ID, MESSAGE)
    finally:
        pool.call(destroy_labelled, TOOL_LABEL)
