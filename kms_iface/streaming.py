"""Chunked AES-GCM streams: files of any size through a token, in constant memory.

A token that holds multi-part GCM plaintext back until ``C_DecryptFinal`` (SoftHSM2 among
them) would need memory equal to the stream's size for one GCM operation. This format cuts the
plaintext into fixed-size chunks instead, each sealed by its own single-part AES-GCM operation,
and binds every chunk to its file and its position, so that nothing can be cut, moved or mixed
without the decryption noticing.

Layout (integers big-endian)::

    stream  = header ‖ chunk_0 ‖ chunk_1 ‖ ... ‖ chunk_last
    header  = magic "KMSI-GCM" (8) ‖ version 0x01 (1) ‖ chunk size C (4, u32) ‖ file id (16)
    chunk_i = iv (12) ‖ ciphertext ‖ tag (16)
    AAD_i   = header (29) ‖ i (8, u64) ‖ final (1: 0x01 for the last chunk, else 0x00)

- Every chunk but the last holds exactly C plaintext bytes; the last holds 0 to C - 1 bytes.
  A stream therefore always ends with exactly one short (possibly empty) chunk: a plaintext of
  a multiple of C bytes, the empty one included, gets an empty last chunk. A reader knows a
  chunk is the last one from its length alone, before decrypting it.
- Each chunk has a fresh random 12-byte IV (``os.urandom``) and a 128-bit tag; its ciphertext
  is as long as its plaintext. Stored size: 29 + 28 * (L // C + 1) + L for L plaintext bytes.
- The file id is 16 random bytes drawn per stream. The whole header is in every chunk's AAD, so
  a chunk of another stream, even one sealed with the same key, fails authentication, and so
  does any change to the header (the last chunk is always present, so the header is always
  authenticated, also for an empty plaintext).
- Limits: C from 1 KiB to 16 MiB (default 64 KiB, within the single-call limits of common
  HSMs); at most 2**32 chunks per stream, the bound NIST SP 800-38D sets on random 96-bit IVs
  under one key (a limit on the key's whole use, which one stream cannot check alone).

What is detected, and how (every failure is a typed ``InterfaceError``; no message quotes data):

- not a stream (bad magic, shorter than the header), another format version, or a chunk size
  out of bounds: ``InvalidRequestError``, before any decryption;
- a changed header, IV, ciphertext or tag, chunks reordered, dropped or duplicated, a chunk of
  another stream, data cut inside a chunk or appended after the last one, or the wrong key:
  ``StreamDecryptionError`` (a ``DecryptionError``) naming the chunk that failed;
- a stream cut at a chunk boundary (the last chunk missing): ``StreamDecryptionError`` too.

Memory: one plaintext chunk and one encrypted chunk buffer, whatever the stream's size; the
plaintext buffer is a ``SecretBytes``, wiped after every decrypted chunk is written and at the
end of every stream. A chunk's plaintext is written only after the token has checked that
chunk's tag (single-part GCM returns no plaintext before the check). A failure at chunk k still
leaves chunks 0 to k - 1 written: each authentic, but together possibly a truncated prefix of
the plaintext. Whoever reads the output must treat it as complete only when ``decrypt_stream``
returns; ``kms-iface decrypt`` writes to a temporary file and renames it only then.

Sources are read with ``readinto`` until full or at end of file, and sinks written until every
byte is taken, so unbuffered files (``open(path, "rb", buffering=0)``) work, and no buffered
writer keeps a copy of the plaintext. Non-blocking files are not supported.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Final, Protocol

from kms_iface._pkcs11 import Mechanism, SecretBytes, Session, wipe
from kms_iface.errors import DecryptionError, HsmError, InvalidRequestError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_VERSION",
    "HEADER_LENGTH",
    "IV_LENGTH",
    "MAGIC",
    "MAX_CHUNKS",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "TAG_LENGTH",
    "Readable",
    "StreamDecryptionError",
    "Writable",
    "decrypt_stream",
    "encrypt_stream",
    "write_all",
]

MAGIC: Final = b"KMSI-GCM"
FORMAT_VERSION: Final = 1
MIN_CHUNK_SIZE: Final = 1 << 10
MAX_CHUNK_SIZE: Final = 1 << 24
DEFAULT_CHUNK_SIZE: Final = 1 << 16
MAX_CHUNKS: Final = 1 << 32

IV_LENGTH: Final = 12
TAG_LENGTH: Final = 16
_HEADER: Final = struct.Struct(">8sBI16s")
HEADER_LENGTH: Final = _HEADER.size
_FILE_ID_LENGTH: Final = 16
_POSITION: Final = struct.Struct(">QB")
_OVERHEAD: Final = IV_LENGTH + TAG_LENGTH


class Readable(Protocol):
    """A binary source read with ``readinto`` (files opened ``"rb"``, raw or buffered)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class Writable(Protocol):
    """A binary sink (files opened ``"wb"``, raw or buffered)."""

    def write(self, data: memoryview, /) -> int | None: ...


class StreamDecryptionError(DecryptionError):
    """A chunk of an encrypted stream failed authentication, or the stream is cut short.

    The message says which chunk, and what may be wrong, never what the data holds.
    """

    def __init__(self, message: str) -> None:
        HsmError.__init__(self, message)

    def __reduce__(self) -> tuple[type[StreamDecryptionError], tuple[str]]:
        return (type(self), (self.message,))


def _check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidRequestError(
            f"the chunk size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes, got {chunk_size}"
        )


def _read_full(source: Readable, view: memoryview) -> int:
    """Read until ``view`` is full or the source ends; the number of bytes read."""
    total = 0
    while total < view.nbytes:
        count = source.readinto(view[total:])
        if not count:
            break
        total += count
    return total


def write_all(sink: Writable, view: memoryview) -> None:
    """Write all of ``view``, however many calls a raw (unbuffered) file needs."""
    while view.nbytes:
        count = sink.write(view)
        if not count:
            raise OSError("the output accepted no bytes")
        view = view[count:]


def _mechanism(iv: memoryview | bytes, header: bytes, index: int, final: bool) -> Mechanism:
    return Mechanism.aes_gcm(iv, header + _POSITION.pack(index, final), TAG_LENGTH * 8)


def _too_many_chunks() -> InvalidRequestError:
    return InvalidRequestError(
        f"a stream holds at most {MAX_CHUNKS} chunks: use a larger chunk size or split the data"
    )


def encrypt_stream(
    session: Session,
    key: int,
    source: Readable,
    sink: Writable,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Encrypt ``source`` into ``sink`` with the AES key ``key``, chunk by chunk.

    ``progress`` is called with the number of source bytes consumed after each chunk. Returns
    the plaintext length. The format is the module docstring's.
    """
    _check_chunk_size(chunk_size)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, chunk_size, os.urandom(_FILE_ID_LENGTH))
    write_all(sink, memoryview(header))
    record = bytearray(chunk_size + _OVERHEAD)
    total = 0
    with (
        SecretBytes(chunk_size) as plain,
        memoryview(plain) as plain_view,
        memoryview(record) as record_view,
    ):
        for index in range(MAX_CHUNKS):
            count = _read_full(source, plain_view)
            final = count < chunk_size
            iv = os.urandom(IV_LENGTH)
            record_view[:IV_LENGTH] = iv
            sealed = session.encrypt_into(
                _mechanism(iv, header, index, final),
                key,
                plain_view[:count],
                record_view[IV_LENGTH:],
            )
            write_all(sink, record_view[: IV_LENGTH + sealed])
            total += count
            if progress is not None:
                progress(count)
            if final:
                return total
    raise _too_many_chunks()


def _read_header(source: Readable) -> tuple[bytes, int]:
    """The header and its chunk size; anything that is not a valid header is refused."""
    header = bytearray(HEADER_LENGTH)
    if _read_full(source, memoryview(header)) < HEADER_LENGTH:
        raise InvalidRequestError(
            f"not a kms-iface encrypted stream: shorter than its {HEADER_LENGTH}-byte header"
        )
    magic, version, chunk_size, _ = _HEADER.unpack(header)
    if magic != MAGIC:
        raise InvalidRequestError(
            "not a kms-iface encrypted stream (no KMSI-GCM header): was it made by "
            "'kms-iface encrypt'?"
        )
    if version != FORMAT_VERSION:
        raise InvalidRequestError(
            f"encrypted stream format version {version} is not supported "
            f"(this kms-iface reads version {FORMAT_VERSION})"
        )
    try:
        _check_chunk_size(chunk_size)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"corrupt stream header: {exc.message}") from None
    return bytes(header), chunk_size


def decrypt_stream(
    session: Session,
    key: int,
    source: Readable,
    sink: Writable,
    *,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Decrypt a stream of the module docstring's format from ``source`` into ``sink``.

    Each chunk's plaintext is written once its tag has been checked, then wiped. ``progress`` is
    called with the number of source bytes consumed (the header, then each chunk). Returns the
    plaintext length; raises ``StreamDecryptionError`` or ``InvalidRequestError`` (see above).
    """
    header, chunk_size = _read_header(source)
    if progress is not None:
        progress(HEADER_LENGTH)
    record = bytearray(chunk_size + _OVERHEAD)
    total = 0
    with (
        SecretBytes(chunk_size + TAG_LENGTH) as plain,
        memoryview(plain) as plain_view,
        memoryview(record) as record_view,
    ):
        for index in range(MAX_CHUNKS):
            count = _read_full(source, record_view)
            if count < _OVERHEAD:
                raise StreamDecryptionError(
                    f"the encrypted stream is truncated: chunk {index} is "
                    f"{'missing' if count == 0 else 'cut short'}, the data ends after "
                    f"{total} plaintext bytes"
                )
            final = count < record_view.nbytes
            try:
                plain_count = session.decrypt_into(
                    _mechanism(record_view[:IV_LENGTH], header, index, final),
                    key,
                    record_view[IV_LENGTH:count],
                    plain_view,
                )
            except DecryptionError:
                raise StreamDecryptionError(
                    f"chunk {index} of the encrypted stream failed authentication: the stream "
                    "is damaged, cut, reordered or mixed with another stream, or this is not "
                    "the key it was encrypted with"
                ) from None
            try:
                write_all(sink, plain_view[:plain_count])
            finally:
                wipe(plain_view[:plain_count])
            total += plain_count
            if progress is not None:
                progress(count)
            if final:
                return total
    raise _too_many_chunks()
