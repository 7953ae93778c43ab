"""The DER of a SEQUENCE of INTEGERs, written straight into a wipeable buffer.

PKCS#1 ``RSAPrivateKey`` and ``RSAPublicKey`` are such sequences; their integers are secrets (or
sit beside secrets), so no intermediate copy is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from kms_iface.secrets import SecretBytes

__all__ = ["integer_sequence"]

_SEQUENCE: Final = 0x30
_INTEGER: Final = 0x02


def integer_sequence(
    integers: Sequence[bytes | bytearray | memoryview | SecretBytes],
) -> SecretBytes:
    """``SEQUENCE { INTEGER ... }`` of non-negative big-endian integers (b"" is zero)."""
    magnitudes = [_magnitude(integer) for integer in integers]
    # DER integers are signed: a magnitude whose top bit is set gets a leading zero byte, and
    # zero is one zero byte.
    sizes = [len(m) + (1 if not len(m) or m[0] >> 7 else 0) for m in magnitudes]
    body = sum(_header_size(size) + size for size in sizes)
    der = SecretBytes(_header_size(body) + body)  # zero-filled: the padding bytes are in place
    with memoryview(der) as out:
        pos = _write_header(out, 0, _SEQUENCE, body)
        for magnitude, size in zip(magnitudes, sizes, strict=True):
            pos = _write_header(out, pos, _INTEGER, size) + size - len(magnitude)
            out[pos : pos + len(magnitude)] = magnitude
            pos += len(magnitude)
    return der


def _magnitude(value: bytes | bytearray | memoryview | SecretBytes) -> memoryview:
    """The bytes of ``value`` without leading zero bytes (a view, no copy)."""
    view = memoryview(value).cast("B")
    start = 0
    while start < len(view) and view[start] == 0:
        start += 1
    return view[start:]


def _header_size(length: int) -> int:
    return 2 if length < 0x80 else 2 + (length.bit_length() + 7) // 8


def _write_header(out: memoryview, pos: int, tag: int, length: int) -> int:
    """Write a tag and a definite minimal length at ``pos``; the position after them."""
    out[pos] = tag
    if length < 0x80:
        out[pos + 1] = length
        return pos + 2
    octets = (length.bit_length() + 7) // 8
    out[pos + 1] = 0x80 | octets
    out[pos + 2 : pos + 2 + octets] = length.to_bytes(octets, "big")
    return pos + 2 + octets
