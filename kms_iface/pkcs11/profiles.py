"""Vendor profiles: what differs between PKCS#11 modules, as data.

A profile names a module's default path, the environment variable that overrides it, the batch
size of ``C_FindObjects`` loops and the largest input the token accepts in one AES-CBC call
(``None``: no limit). ``resolve_library`` picks the module file: an explicit path, else the
environment variable, else the default path. The façade's call timeout, which every module
shares, is checked here too.
"""

from __future__ import annotations

import os
from typing import Final

import msgspec

from kms_iface.errors import InvalidRequestError

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "MAX_CALL_TIMEOUT",
    "PROFILES",
    "VendorProfile",
    "check_call_timeout",
    "get_profile",
    "resolve_library",
]

DEFAULT_CALL_TIMEOUT: Final = 60.0
"""Seconds an HSM call may take, queueing included, unless ``call_timeout`` says otherwise
(long enough for an RSA-4096 key generation on a slow token)."""
MAX_CALL_TIMEOUT: Final = 86400.0
"""The largest ``call_timeout`` accepted (a day); ``None`` means no bound."""


def check_call_timeout(value: object, name: str = "call_timeout") -> None:
    """Refuse a call timeout that is not ``None`` or a number of seconds in (0, a day]."""
    if value is None:
        return
    if type(value) not in (int, float):
        raise InvalidRequestError(f"{name} must be a number of seconds or None")
    seconds = float(value)  # type: ignore[arg-type]
    if not 0 < seconds <= MAX_CALL_TIMEOUT:  # NaN fails too
        raise InvalidRequestError(
            f"{name} must be more than 0 and at most {MAX_CALL_TIMEOUT:g} seconds, got {value}"
        )


class VendorProfile(msgspec.Struct, frozen=True):
    """One vendor's module: default path (None: none), override variable, find batch, CBC cap."""

    name: str
    default_path: str | None
    env_var: str
    find_batch: int
    cbc_limit: int | None = None


PROFILES: Final[dict[str, VendorProfile]] = {
    p.name: p
    for p in (
        VendorProfile("proteccio", "/lib/libnethsm.so", "PROTECCIO_PKCS11_LIB", 64),
        VendorProfile("utimaco", "/lib/libcs_pkcs11_R3.so", "UTIMACO_PKCS11_LIB", 64),
        VendorProfile("crypt2pay", "/lib/libpkcs11c2p.so", "CRYPT2PAY_PKCS11_LIB", 64),
        VendorProfile("softhsm2", "/usr/lib/softhsm/libsofthsm2.so", "SOFTHSM2_PKCS11_LIB", 32),
        VendorProfile(
            "smartcardhsm",
            "/usr/local/lib/libsc-hsm-pkcs11.so",
            "SMARTCARDHSM_PKCS11_LIB",
            16,
            cbc_limit=1024,
        ),
        VendorProfile("other", None, "OTHER_HSM_PKCS11_LIB", 32),
    )
}
"""The known profiles by name."""


def get_profile(name: str) -> VendorProfile:
    """The profile called ``name``; an unknown name raises ``InvalidRequestError``."""
    profile = PROFILES.get(name)
    if profile is None:
        known = ", ".join(sorted(PROFILES))
        raise InvalidRequestError(f"unknown HSM profile {name!r} (known: {known})")
    return profile


def resolve_library(
    profile: VendorProfile, explicit_path: str | os.PathLike[str] | None = None
) -> str:
    """The module file to load: ``explicit_path``, else ``$<env_var>``, else the default path.

    A missing file, or no path at all (profile ``other`` without its variable), raises
    ``InvalidRequestError`` naming the profile and the path.
    """
    if explicit_path is not None:
        path: str | None = os.fspath(explicit_path)
        source = "explicit path"
    elif os.environ.get(profile.env_var):
        path = os.environ[profile.env_var]
        source = f"${profile.env_var}"
    else:
        path = profile.default_path
        source = "default path"
    if not path:
        raise InvalidRequestError(
            f"HSM profile {profile.name!r} has no default PKCS#11 module path: "
            f"set {profile.env_var} or pass the path"
        )
    if not os.path.isfile(path):
        raise InvalidRequestError(
            f"PKCS#11 module of HSM profile {profile.name!r} not found: {path!r} ({source})"
        )
    return path
