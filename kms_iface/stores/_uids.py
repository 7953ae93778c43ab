"""Fresh UUIDv4 strings for ``create(None, ...)``, drawn from the OS CSPRNG in blocks.

``uuid.uuid4()`` makes one ``getrandom`` system call per uid; under 32 concurrent writers that was
a visible share of a create's cost. Bytes are taken from a 4 KiB block of ``os.urandom`` and never
reused, so uids stay as unpredictable as ``uuid4``'s.
"""

from __future__ import annotations

import os
import threading
from typing import Final

__all__ = ["new_uid"]

_BLOCK: Final = 4096
_lock = threading.Lock()
_pool = b""
_offset = _BLOCK


def new_uid() -> str:
    """A random (version 4, RFC 9562 variant) UUID in its canonical 36-character form."""
    global _pool, _offset
    with _lock:
        if _offset >= _BLOCK:
            _pool = os.urandom(_BLOCK)
            _offset = 0
        raw = bytearray(_pool[_offset : _offset + 16])
        _offset += 16
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _reset_after_fork() -> None:
    global _lock, _pool, _offset
    _lock = threading.Lock()
    _pool, _offset = b"", _BLOCK


# A forked child must not hand out the parent's remaining random bytes again.
os.register_at_fork(after_in_child=_reset_after_fork)
