"""Loaded PKCS#11 modules: one initialised instance per library file, shared and ref-counted.

``Module(path)`` is a user's handle. Every handle on the same file (whatever path or symlink names
it) shares one ``Library``, initialised once with ``CKF_OS_LOCKING_OK``; the last ``close()``
finalises and unloads it, and whatever is still open is finalised at interpreter exit. After
``fork()`` the child re-initialises lazily and never reuses the parent's sessions.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import TYPE_CHECKING

from kms_iface._pkcs11 import (
    OS_LOCKING_OK,
    Library,
    LibraryInfo,
    MechanismInfo,
    Session,
    SlotInfo,
    TokenInfo,
)
from kms_iface.errors import HsmError, InvalidRequestError
from kms_iface.pkcs11._closing import Closing
from kms_iface.pkcs11.pool import SessionPool

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Module"]


class _Shared:
    """A Library and the number of open Module handles on it."""

    __slots__ = ("library", "users")

    def __init__(self, library: Library) -> None:
        self.library = library
        self.users = 0


_registry: dict[str, _Shared] = {}
_registry_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for shared in _registry.values():
        shared.library.after_fork()


def _finalize_all() -> None:
    with _registry_lock:
        shared = list(_registry.values())
        _registry.clear()
    for entry in shared:
        with contextlib.suppress(HsmError):
            entry.library.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_finalize_all)


class Module(Closing):
    """A handle on a PKCS#11 module loaded from ``path``.

    ``init_flags`` and ``init_reserved`` override the ``C_Initialize`` arguments for modules
    that refuse OS locking (``CKR_CANT_LOCK``) or need ``pReserved``; they apply when this
    handle is the one that loads the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        init_flags: int = OS_LOCKING_OK,
        init_reserved: Buffer | None = None,
    ) -> None:
        self.path = os.fspath(path)
        key = self.path
        if os.sep in self.path:
            if not os.path.isfile(self.path):
                raise InvalidRequestError(f"PKCS#11 module {self.path!r} does not exist")
            key = os.path.realpath(self.path)
        with _registry_lock:
            shared = _registry.get(key)
            if shared is None:
                library = Library(key)
                library.initialize(init_flags, init_reserved)
                shared = _registry[key] = _Shared(library)
            shared.users += 1
        self._shared: _Shared | None = shared
        self.library: Library = shared.library

    def __repr__(self) -> str:
        return f"<Module {self.path!r}{' closed' if self.closed else ''}>"

    @property
    def closed(self) -> bool:
        return self._shared is None

    def close(self) -> None:
        """Release this handle (idempotent); the last one finalises and unloads the module."""
        shared, self._shared = self._shared, None
        if shared is None:
            return
        with _registry_lock:
            shared.users -= 1
            if shared.users > 0:
                return
            _registry.pop(shared.library.path, None)
        shared.library.close()

    def _library(self) -> Library:
        if self._shared is None:
            raise InvalidRequestError(f"PKCS#11 module {self.path!r} handle is closed")
        return self.library

    def info(self) -> LibraryInfo:
        return self._library().get_info()

    def slots(self, token_present: bool = True) -> list[int]:
        return self._library().get_slot_list(token_present)

    def slot_info(self, slot_id: int) -> SlotInfo:
        return self._library().get_slot_info(slot_id)

    def token_info(self, slot_id: int) -> TokenInfo:
        return self._library().get_token_info(slot_id)

    def mechanisms(self, slot_id: int) -> list[int]:
        return self._library().get_mechanism_list(slot_id)

    def mechanism_info(self, slot_id: int, mechanism: int) -> MechanismInfo:
        return self._library().get_mechanism_info(slot_id, mechanism)

    def find_slot(self, token_label: str) -> int:
        """The slot holding the token labelled ``token_label``."""
        library = self._library()
        for slot in library.get_slot_list(True):
            if library.get_token_info(slot).label == token_label:
                return slot
        raise InvalidRequestError(f"no token labelled {token_label!r} in {self.path!r}")

    def open_session(self, slot_id: int, read_write: bool = True) -> Session:
        """A raw session outside any pool; the caller owns it and closes it."""
        flags = 0x6 if read_write else 0x4
        return self._library().open_session(slot_id, flags)

    def pool(
        self,
        slot_id: int,
        pin: Buffer | str | None,
        *,
        size: int | None = None,
        timeout: float | None = 30.0,
    ) -> SessionPool:
        """A session pool logged in to the slot's token (see ``SessionPool``)."""
        return SessionPool(self, slot_id, pin, size=size, timeout=timeout)
