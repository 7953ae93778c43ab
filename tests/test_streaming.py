"""Chunked AES-GCM streams on the real SoftHSM2 token: round trips, every kind of tampering, and
constant memory."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kms_iface.errors import DecryptionError, InvalidRequestError
from kms_iface.pkcs11 import Session, aes_key_template
from kms_iface.pkcs11 import constants as ck
from kms_iface.streaming import (
    DEFAULT_CHUNK_SIZE,
    HEADER_LENGTH,
    MAGIC,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    StreamDecryptionError,
    decrypt_stream,
    encrypt_stream,
)

C = MIN_CHUNK_SIZE  # small chunks keep the multi-chunk cases small
RECORD = 12 + C + 16
MiB = 1 << 20


def _new_key(session: Session) -> int:
    template = aes_key_template(256, token=False, key_id=f"stream-{uuid.uuid4()}".encode())
    return session.generate_key(ck.CKM_AES_KEY_GEN, template)


@pytest.fixture
def key(session: Session) -> Iterator[int]:
    handle = _new_key(session)
    yield handle
    session.destroy_object(handle)


def seal(session: Session, key: int, data: bytes, chunk_size: int = C) -> bytes:
    out = io.BytesIO()
    assert encrypt_stream(session, key, io.BytesIO(data), out, chunk_size=chunk_size) == len(data)
    return out.getvalue()


def unseal(session: Session, key: int, blob: bytes) -> bytes:
    out = io.BytesIO()
    assert decrypt_stream(session, key, io.BytesIO(blob), out) == len(out.getvalue())
    return out.getvalue()


def record(blob: bytes, index: int) -> slice:
    """Where chunk ``index`` (a full one, or the last) lies in ``blob``."""
    start = HEADER_LENGTH + index * RECORD
    return slice(start, min(start + RECORD, len(blob)))


def flip(blob: bytes, position: int, bit: int = 0) -> bytes:
    changed = bytearray(blob)
    changed[position] ^= 1 << bit
    return bytes(changed)


@pytest.mark.parametrize("size", [0, 1, C - 1, C, C + 1, 5 * C + 17])
def test_round_trip_and_layout(session: Session, key: int, size: int) -> None:
    data = os.urandom(size)
    blob = seal(session, key, data)
    assert len(blob) == HEADER_LENGTH + 28 * (size // C + 1) + size
    magic, version, chunk_size = struct.unpack(">8sBI", blob[:13])
    assert (magic, version, chunk_size) == (MAGIC, 1, C)
    assert unseal(session, key, blob) == data


def test_default_chunk_size_and_fresh_file_id_and_ivs(session: Session, key: int) -> None:
    data = os.urandom(2 * DEFAULT_CHUNK_SIZE)
    out = io.BytesIO()
    encrypt_stream(session, key, io.BytesIO(data), out)
    first, second = out.getvalue(), seal(session, key, data, DEFAULT_CHUNK_SIZE)
    assert struct.unpack(">I", first[9:13]) == (DEFAULT_CHUNK_SIZE,)
    assert first[13:HEADER_LENGTH] != second[13:HEADER_LENGTH]  # file ids
    assert first[HEADER_LENGTH : HEADER_LENGTH + 12] != second[HEADER_LENGTH : HEADER_LENGTH + 12]
    assert unseal(session, key, first) == unseal(session, key, second) == data


@pytest.mark.parametrize("chunk_size", [MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1])
def test_chunk_size_bounds(session: Session, key: int, chunk_size: int) -> None:
    with pytest.raises(InvalidRequestError, match="chunk size"):
        encrypt_stream(session, key, io.BytesIO(b"x"), io.BytesIO(), chunk_size=chunk_size)


@pytest.mark.parametrize("size", [3 * C, 3 * C + 100])
def test_dropping_the_last_chunk_is_truncation(session: Session, key: int, size: int) -> None:
    blob = seal(session, key, os.urandom(size))
    cut = blob[: record(blob, 3).start]
    with pytest.raises(StreamDecryptionError, match="truncated: chunk 3 is missing"):
        unseal(session, key, cut)


@pytest.mark.parametrize("keep", [1, 11, 27, 28, 500, RECORD - 1])
def test_cutting_inside_a_chunk(session: Session, key: int, keep: int) -> None:
    blob = seal(session, key, os.urandom(3 * C + 100))
    with pytest.raises(StreamDecryptionError, match="chunk 1"):
        unseal(session, key, blob[: record(blob, 1).start + keep])


def test_header_only_and_cut_header(session: Session, key: int) -> None:
    blob = seal(session, key, b"")
    with pytest.raises(StreamDecryptionError, match="chunk 0 is missing"):
        unseal(session, key, blob[:HEADER_LENGTH])
    for length in (0, 8, HEADER_LENGTH - 1):
        with pytest.raises(InvalidRequestError, match="shorter than its 29-byte header"):
            unseal(session, key, blob[:length])


def test_dropping_a_middle_chunk(session: Session, key: int) -> None:
    blob = seal(session, key, os.urandom(3 * C + 100))
    dropped = blob[: record(blob, 1).start] + blob[record(blob, 1).stop :]
    with pytest.raises(StreamDecryptionError, match="chunk 1 of the encrypted stream failed"):
        unseal(session, key, dropped)


def test_reordering_and_duplicating_chunks(session: Session, key: int) -> None:
    blob = seal(session, key, os.urandom(3 * C + 100))
    header = blob[:HEADER_LENGTH]
    zero, one, two, last = (blob[record(blob, i)] for i in range(4))
    for body in (one + zero + two + last, zero + two + one + last, zero + zero + two + last):
        with pytest.raises(StreamDecryptionError, match="failed authentication"):
            unseal(session, key, header + body)


def test_chunk_from_another_file_with_the_same_key(session: Session, key: int) -> None:
    data = os.urandom(3 * C + 100)
    first, second = seal(session, key, data), seal(session, key, data)
    spliced = first[: record(first, 1).start] + second[record(second, 1)]
    spliced += first[record(first, 1).stop :]
    with pytest.raises(StreamDecryptionError, match="chunk 1 of the encrypted stream failed"):
        unseal(session, key, spliced)
    # The whole body of one file under the other's header fails at its first chunk.
    with pytest.raises(StreamDecryptionError, match="chunk 0"):
        unseal(session, key, first[:HEADER_LENGTH] + second[HEADER_LENGTH:])


def test_appending_after_the_last_chunk(session: Session, key: int) -> None:
    for size in (3 * C, 3 * C + 100):
        blob = seal(session, key, os.urandom(size))
        for extra in (b"\0", os.urandom(RECORD)):
            with pytest.raises(StreamDecryptionError, match="chunk 3"):
                unseal(session, key, blob + extra)


@pytest.mark.parametrize(
    ("where", "error"),
    [
        (0, InvalidRequestError),  # magic
        (8, InvalidRequestError),  # version
        (9, InvalidRequestError),  # chunk size, high byte: out of bounds
        (12, StreamDecryptionError),  # chunk size, low byte: 1025, in bounds
        (13, StreamDecryptionError),  # file id
        (HEADER_LENGTH + RECORD + 5, StreamDecryptionError),  # chunk 1 IV
        (HEADER_LENGTH + RECORD + 12 + 100, StreamDecryptionError),  # chunk 1 ciphertext
        (HEADER_LENGTH + 2 * RECORD - 1, StreamDecryptionError),  # chunk 1 tag
        (-1, StreamDecryptionError),  # last chunk tag
    ],
)
def test_bit_flips(
    session: Session, key: int, where: int, error: type[InvalidRequestError | DecryptionError]
) -> None:
    blob = seal(session, key, os.urandom(3 * C + 100))
    for bit in (0, 7):
        with pytest.raises(error):
            unseal(session, key, flip(blob, where, bit))


def test_wrong_key(session: Session, key: int) -> None:
    blob = seal(session, key, os.urandom(C + 1))
    other = _new_key(session)
    try:
        with pytest.raises(StreamDecryptionError, match="chunk 0") as caught:
            unseal(session, other, blob)
    finally:
        session.destroy_object(other)
    assert isinstance(caught.value, DecryptionError)


def test_failure_leaves_only_authenticated_chunks_written(session: Session, key: int) -> None:
    data = os.urandom(3 * C + 100)
    blob = flip(seal(session, key, data), HEADER_LENGTH + 2 * RECORD + 40)  # chunk 2
    out = io.BytesIO()
    with pytest.raises(StreamDecryptionError, match="chunk 2"):
        decrypt_stream(session, key, io.BytesIO(blob), out)
    assert out.getvalue() == data[: 2 * C]


class _Pattern:
    """``size`` bytes cycling through a random block (not a multiple of any chunk size), made
    on demand and hashed as they are read."""

    def __init__(self, size: int) -> None:
        self.block = os.urandom(MiB + 7)
        self.left = size
        self.offset = 0
        self.digest = hashlib.sha256()

    def readinto(self, buffer: memoryview, /) -> int:
        count = min(buffer.nbytes, self.left, len(self.block) - self.offset)
        buffer[:count] = self.block[self.offset : self.offset + count]
        self.digest.update(buffer[:count])
        self.offset = (self.offset + count) % len(self.block)
        self.left -= count
        return count


class _Hashing:
    """A sink that only hashes."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: memoryview, /) -> int:
        self.digest.update(data)
        self.size += data.nbytes
        return data.nbytes


def test_memory_stays_bounded_for_a_50_mib_stream(
    session: Session, key: int, tmp_path: Path
) -> None:
    size = 50 * MiB
    source = _Pattern(size)
    sink = _Hashing()
    path = tmp_path / "stream.kmsi"
    tracemalloc.start()
    try:
        with open(path, "wb", buffering=0) as encrypted:
            encrypt_stream(session, key, source, encrypted)
        _, encrypt_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with open(path, "rb", buffering=0) as encrypted:
            assert decrypt_stream(session, key, encrypted, sink) == size
        _, decrypt_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size == size
    assert sink.digest.digest() == source.digest.digest()
    assert path.stat().st_size == HEADER_LENGTH + 28 * (size // DEFAULT_CHUNK_SIZE + 1) + size
    assert encrypt_peak < MiB, encrypt_peak
    assert decrypt_peak < MiB, decrypt_peak
