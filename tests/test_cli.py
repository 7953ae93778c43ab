"""The ``kms-iface`` commands, each run as a subprocess against a real SoftHSM2 token."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_der_public_key

from kms_iface.pkcs11 import SessionPool, find_keys
from kms_iface.pkcs11.softhsm import SoftHsmToken, create_token
from kms_iface.streaming import DEFAULT_CHUNK_SIZE, HEADER_LENGTH
from tests.cli_runs import assert_failed

PIN_VAR = "KMS_IFACE_TEST_PIN"
MiB = 1 << 20

Cli = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m kms_iface ARGS`` with no terminal on stdin (a prompt would fail, not hang)."""
    return subprocess.run(
        [sys.executable, "-m", "kms_iface", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def env(token: SoftHsmToken) -> dict[str, str]:
    return {**os.environ, **token.environ(), PIN_VAR: token.user_pin}


@pytest.fixture
def cli(env: dict[str, str]) -> Cli:
    return lambda *args, **kw: run_cli(env, *args, **kw)


@pytest.fixture(scope="module")
def where(token: SoftHsmToken, slot: int) -> list[str]:
    return ["--module", token.module, "--slot", str(slot)]


@pytest.fixture(scope="module")
def login(where: list[str]) -> list[str]:
    return [*where, "--pin-env", PIN_VAR]


@pytest.fixture
def new_id(pool: SessionPool) -> Iterator[Callable[[str], str]]:
    """Unique key ids; whatever the test leaves on the token under them is destroyed."""
    made: list[str] = []

    def make(kind: str) -> str:
        made.append(f"cli-{kind}-{uuid.uuid4()}")
        return made[-1]

    yield make
    with pool.session() as session:
        for key_id in made:
            for raw in (key_id.encode(), f"{key_id}_pk".encode()):
                for handle in find_keys(session, key_id=raw):
                    session.destroy_object(handle)


def table_rows(stdout: str, first_cell: str) -> list[list[str]]:
    """The cells of every table row whose first cell is ``first_cell``."""
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines()]
    return [cells for cells in rows if cells and cells[0] == first_cell]


def table_row(stdout: str, first_cell: str) -> list[str]:
    """The cells of the one table row whose first cell is ``first_cell``."""
    rows = table_rows(stdout, first_cell)
    assert len(rows) == 1, f"{len(rows)} rows {first_cell!r} in:\n{stdout}"
    return rows[0]


def reference_decrypt(key: bytes, blob: bytes) -> bytes:
    """The stream format of kms_iface.streaming's docstring, decoded with 'cryptography'."""
    header = blob[:HEADER_LENGTH]
    magic, version, chunk_size, _ = struct.unpack(">8sBI16s", header)
    assert (magic, version) == (b"KMSI-GCM", 1)
    parts, position, index = [], HEADER_LENGTH, 0
    while True:
        chunk = blob[position : position + 12 + chunk_size + 16]
        final = len(chunk) < 12 + chunk_size + 16
        aad = header + struct.pack(">QB", index, final)
        parts.append(AESGCM(key).decrypt(chunk[:12], chunk[12:], aad))
        position, index = position + len(chunk), index + 1
        if final:
            assert position == len(blob)
            return b"".join(parts)


# -- tokens ------------------------------------------------------------------------------------


def test_info_slots_and_mechanisms(cli: Cli, token: SoftHsmToken, slot: int) -> None:
    done = cli("info", "--module", token.module)
    assert done.returncode == 0, done.stderr
    assert table_row(done.stdout, "manufacturer")[1] == "SoftHSM"
    assert table_row(done.stdout, "path")[1] == token.module

    for command in (["info", "--token", token.label], ["slots"]):
        done = cli(*command, "--module", token.module)
        assert done.returncode == 0, done.stderr
        slot_row, token_row = table_rows(done.stdout, str(slot))  # the slot, then its token
        assert slot_row[3] == "token_present"
        assert token_row[1] == token.label
        assert {"login_required", "token_initialized"} <= set(token_row[5].split(", "))

    done = cli("mechanisms", "--module", token.module, "--slot", str(slot))
    assert done.returncode == 0, done.stderr
    assert table_row(done.stdout, "CKM_AES_KEY_GEN")[3] == "generate"
    # Exactly the module's flags: the info struct is zeroed before SoftHSM2 adds to it.
    assert table_row(done.stdout, "CKM_AES_GCM")[3].split(", ") == ["encrypt", "decrypt"]
    assert table_row(done.stdout, "CKM_RSA_PKCS_KEY_PAIR_GEN")[1:3] != ["0", "0"]


# -- keys --------------------------------------------------------------------------------------


def test_tables_contain_the_created_keys(
    cli: Cli, login: list[str], new_id: Callable[[str], str]
) -> None:
    aes, secret, pair = new_id("aes"), new_id("sensitive"), new_id("rsa")
    for args in (
        ["--type", "aes", "--id", aes],
        ["--type", "aes", "--length", "128", "--id", secret, "--sensitive"],
        ["--type", "rsa", "--length", "1024", "--key", pair],
    ):
        done = cli("keys", "create", *login, *args)
        assert done.returncode == 0, done.stderr
        assert "created" in done.stdout
    done = cli("keys", "list", *login)
    assert done.returncode == 0, done.stderr
    assert table_row(done.stdout, aes) == [aes, aes, "secret key", "AES", "256", "no", "yes"]
    assert table_row(done.stdout, secret)[2:] == ["secret key", "AES", "128", "yes", "yes"]
    assert table_row(done.stdout, pair)[2:] == ["private key", "RSA", "1024", "no", "yes"]
    assert table_row(done.stdout, f"{pair}_pk")[2:5] == ["public key", "RSA", "1024"]


def test_create_then_delete_round_trip(
    cli: Cli, login: list[str], new_id: Callable[[str], str]
) -> None:
    key_id = new_id("round-trip")
    assert cli("keys", "create", *login, "--type", "aes", "--id", key_id).returncode == 0
    assert_failed(
        cli("keys", "create", *login, "--type", "aes", "--id", key_id), 1, "already exists"
    )
    assert key_id in cli("keys", "list", *login).stdout
    done = cli("keys", "delete", *login, "--key", key_id)
    assert done.returncode == 0, done.stderr
    assert f"deleted AES key '{key_id}'" in done.stdout
    assert key_id not in cli("keys", "list", *login).stdout
    assert_failed(cli("keys", "delete", *login, "--id", key_id), 1, f"no key with id '{key_id}'")


def test_export_writes_what_the_token_allows(
    cli: Cli, login: list[str], new_id: Callable[[str], str], tmp_path: Path
) -> None:
    aes, secret, pair = new_id("export-aes"), new_id("export-sensitive"), new_id("export-rsa")
    cli("keys", "create", *login, "--type", "aes", "--id", aes)
    cli("keys", "create", *login, "--type", "aes", "--id", secret, "--sensitive")
    cli("keys", "create", *login, "--type", "rsa", "--length", "1024", "--id", pair)

    # AES: the raw key, which decrypts a file the token encrypted (the documented format).
    (tmp_path / "plain").write_bytes(os.urandom(3 * DEFAULT_CHUNK_SIZE + 5))
    done = cli("keys", "export", *login, "--id", aes, "--out", str(tmp_path / "aes.key"))
    assert done.returncode == 0, done.stderr
    key = (tmp_path / "aes.key").read_bytes()
    assert len(key) == 32 and (tmp_path / "aes.key").stat().st_mode & 0o777 == 0o600
    encrypt = ["--key", aes, "--in", str(tmp_path / "plain"), "--out", str(tmp_path / "sealed")]
    assert cli("encrypt", *login, *encrypt).returncode == 0
    sealed = (tmp_path / "sealed").read_bytes()
    assert reference_decrypt(key, sealed) == (tmp_path / "plain").read_bytes()

    # RSA: PKCS#1 DER, private and public halves of the same key.
    for name, key_id in (("private.der", pair), ("public.der", f"{pair}_pk")):
        done = cli("keys", "export", *login, "--id", key_id, "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    private = load_der_private_key((tmp_path / "private.der").read_bytes(), None)
    public = load_der_public_key((tmp_path / "public.der").read_bytes())
    assert isinstance(private, rsa.RSAPrivateKey) and isinstance(public, rsa.RSAPublicKey)
    assert private.key_size == 1024
    assert private.public_key().public_numbers() == public.public_numbers()
    assert_failed(
        cli("keys", "export", *login, "--id", pair, "--out", str(tmp_path / "private.der")),
        2,
        "give --force",
    )

    # Sensitive: refused by the token, nothing written.
    out = tmp_path / "sensitive.key"
    done = cli("keys", "export", *login, "--id", secret, "--out", str(out))
    assert_failed(done, 1, "sensitive and cannot be exported")
    assert not out.exists()


# -- encrypt / decrypt ---------------------------------------------------------------------------


def _file_digest(path: Path) -> bytes:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").digest()


def test_encrypt_then_decrypt_50_mib(
    cli: Cli, login: list[str], new_id: Callable[[str], str], tmp_path: Path
) -> None:
    key_id = new_id("file")
    assert cli("keys", "create", *login, "--type", "aes", "--id", key_id).returncode == 0
    plain, sealed, back = tmp_path / "plain", tmp_path / "sealed", tmp_path / "back"
    size = 50 * MiB
    digest = hashlib.sha256()
    with open(plain, "wb") as file:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            digest.update(block)
            file.write(block)
    done = cli("encrypt", *login, "--key", key_id, "--in", str(plain), "--out", str(sealed))
    assert done.returncode == 0, done.stderr
    expected = HEADER_LENGTH + 28 * (size // DEFAULT_CHUNK_SIZE + 1) + size
    assert sealed.stat().st_size == expected
    done = cli("decrypt", *login, "--id", key_id, "--in", str(sealed), "--out", str(back))
    assert done.returncode == 0, done.stderr
    assert f"decrypted {size} plaintext bytes" in done.stdout
    assert back.stat().st_size == size and _file_digest(back) == digest.digest()
    assert back.stat().st_mode & 0o777 == 0o600


def test_existing_output_needs_force(
    cli: Cli, login: list[str], new_id: Callable[[str], str], tmp_path: Path
) -> None:
    key_id = new_id("force")
    cli("keys", "create", *login, "--type", "aes", "--id", key_id)
    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    plain.write_bytes(b"some data")
    sealed.write_bytes(b"precious")
    args = ["--key", key_id, "--in", str(plain), "--out", str(sealed)]
    assert_failed(cli("encrypt", *login, *args), 2, "give --force")
    assert sealed.read_bytes() == b"precious"
    assert cli("encrypt", *login, *args, "--force").returncode == 0
    assert (
        cli(
            "decrypt", *login, "--key", key_id, "--in", str(sealed), "--out", str(plain), "--force"
        ).returncode
        == 0
    )
    assert plain.read_bytes() == b"some data"


def test_tampered_or_truncated_file_fails_and_leaves_no_output(
    cli: Cli, login: list[str], new_id: Callable[[str], str], tmp_path: Path
) -> None:
    key_id = new_id("tamper")
    cli("keys", "create", *login, "--type", "aes", "--id", key_id)
    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    plain.write_bytes(os.urandom(4 * DEFAULT_CHUNK_SIZE + 3))
    cli("encrypt", *login, "--key", key_id, "--in", str(plain), "--out", str(sealed))
    blob = bytearray(sealed.read_bytes())
    record = 12 + DEFAULT_CHUNK_SIZE + 16
    flipped = blob.copy()
    flipped[HEADER_LENGTH + 2 * record + 100] ^= 1
    cases = {
        "flipped": (bytes(flipped), "chunk 2 of the encrypted stream failed authentication"),
        "cut": (bytes(blob[: HEADER_LENGTH + 4 * record]), "truncated: chunk 4 is missing"),
        "text": (b"not an encrypted file at all", "not a kms-iface encrypted stream"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        out = tmp_path / f"{name}.out"
        done = cli(
            "decrypt", *login, "--key", key_id, "--in", str(tmp_path / name), "--out", str(out)
        )
        assert_failed(done, 1, message)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cut",
        "flipped",
        "plain",
        "sealed",
        "text",
    ]


# -- failures ----------------------------------------------------------------------------------


def test_wrong_pin_exits_1_with_one_line(
    spare_token: SoftHsmToken, env: dict[str, str], tmp_path: Path
) -> None:
    wrong = "Wr0ng-Pin-q7Zx"
    pin_file = tmp_path / "pin"
    pin_file.write_text(wrong + "\n")
    target = ["--module", spare_token.module, "--token", spare_token.label]
    for source in (["--pin-env", "WRONG_PIN"], ["--pin-file", str(pin_file)]):
        done = run_cli({**env, "WRONG_PIN": wrong}, "keys", "list", *target, *source)
        assert_failed(done, 1, "CKR_PIN_INCORRECT")
        assert wrong not in done.stdout + done.stderr


def test_unknown_key_exits_1_with_one_line(cli: Cli, login: list[str], tmp_path: Path) -> None:
    unknown = f"cli-unknown-{uuid.uuid4()}"
    (tmp_path / "plain").write_bytes(b"data")
    args = ["--key", unknown, "--in", str(tmp_path / "plain"), "--out", str(tmp_path / "out")]
    assert_failed(cli("encrypt", *login, *args), 1, f"no AES key with id '{unknown}'")
    assert not (tmp_path / "out").exists()
    assert_failed(cli("keys", "export", *login, "--id", unknown, "--out", str(tmp_path / "k")), 1)
    assert_failed(cli("keys", "delete", *login, "--id", unknown), 1, "no key with id")


def test_bad_flags_exit_2(cli: Cli, token: SoftHsmToken, login: list[str], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"data")
    files = ["--in", str(plain), "--out", str(tmp_path / "out")]
    module = ["--module", token.module]
    for args in (
        ["no-such-command"],
        ["keys", "list", *login, "--bogus"],
        ["keys", "create", *login, "--type", "des", "--id", "x"],
        ["keys", "create", *login, "--type", "aes", "--length", "192", "--id", "x"],
        ["keys", "create", *login, "--type", "rsa", "--length", "1000", "--id", "x"],
        ["keys", "create", *login, "--type", "aes"],
        ["encrypt", *login, *files],
        ["encrypt", *login, *files, "--key", "x", "--chunk-size", "10"],
        ["decrypt", *login, "--key", "x", "--in", str(tmp_path / "missing"), "--out", "o"],
        ["slots", *module, "--slot", "-1"],
        ["keys", "list", *module, "--pin-env", PIN_VAR],
        ["keys", "list", *login, "--token", token.label],
        ["keys", "list", *login[:-2], "--pin-env", "KMS_IFACE_UNSET_VARIABLE"],
        ["keys", "list", *login, "--pin-file", str(tmp_path / "missing")],
    ):
        done = cli(*args)
        assert_failed(done, 2)
        assert "Error" in done.stderr, (args, done.stderr)
    assert not (tmp_path / "out").exists()


def test_no_pin_source_and_no_terminal_exits_2(cli: Cli, where: list[str]) -> None:
    done = cli("keys", "list", *where, timeout=60)  # stdin is /dev/null: must not wait
    assert_failed(done, 2, "no PIN source", "--pin-env")


def test_pin_never_appears_in_output(tmp_path: Path) -> None:
    """A token of its own with a PIN that no table, id or number can contain by chance."""
    pin, wrong = "Pin-cli-7qZk-Xw3", "Pin-cli-wrong-R4t"
    token = create_token(tmp_path / "softhsm", label="kms-iface-cli-pin", user_pin=pin)
    env = {**os.environ, **token.environ(), "CLI_PIN": pin, "WRONG_PIN": wrong}
    (tmp_path / "pin").write_text(pin + "\n")
    (tmp_path / "plain").write_bytes(os.urandom(1000))
    target = ["--module", token.module, "--token", token.label]
    login = [*target, "--pin-file", str(tmp_path / "pin")]
    files = ["--key", "k", "--in", str(tmp_path / "plain"), "--out", str(tmp_path / "sealed")]
    runs = [
        (0, ["keys", "create", *login, "--type", "aes", "--id", "k"]),
        (0, ["keys", "list", *target, "--pin-env", "CLI_PIN"]),
        (0, ["keys", "export", *login, "--id", "k", "--out", str(tmp_path / "k.key")]),
        (0, ["encrypt", *login, *files]),
        (
            0,
            [
                "decrypt",
                *login,
                "--key",
                "k",
                "--in",
                str(tmp_path / "sealed"),
                "--out",
                str(tmp_path / "back"),
            ],
        ),
        (0, ["slots", *target]),
        (0, ["keys", "delete", *login, "--id", "k"]),
        (1, ["keys", "list", *target, "--pin-env", "WRONG_PIN"]),
        (1, ["--debug", "keys", "list", *target, "--pin-env", "WRONG_PIN"]),
    ]
    for code, args in runs:
        done = run_cli(env, *args)
        assert done.returncode == code, (args, done.stderr)
        for secret in (pin, wrong):
            assert secret not in done.stdout + done.stderr, args
