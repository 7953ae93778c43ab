"""Throwaway SoftHSM2 tokens: a private configuration and token directory, for tests, benchmarks
and trying the library out without touching the system's tokens.

SoftHSM2 reads ``SOFTHSM2_CONF`` when it is initialised, so set ``token.environ()`` into the
environment before the first ``Module(...)`` of the process (or of a subprocess).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kms_iface.errors import InvalidRequestError

__all__ = ["SOFTHSM2_MODULE_PATHS", "SoftHsmToken", "create_token", "find_softhsm2_module"]

#: Where Debian and most distributions install the module; SOFTHSM2_PKCS11_LIB overrides.
SOFTHSM2_MODULE_PATHS: Final = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def find_softhsm2_module() -> str:
    """The SoftHSM2 module path: $SOFTHSM2_PKCS11_LIB, else the first known path present."""
    override = os.environ.get("SOFTHSM2_PKCS11_LIB")
    candidates = (override,) if override else SOFTHSM2_MODULE_PATHS
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    raise InvalidRequestError(
        "SoftHSM2 is not installed (no libsofthsm2.so in "
        f"{', '.join(p for p in candidates if p)}): install Debian's softhsm2 package"
    )


@dataclass(frozen=True)
class SoftHsmToken:
    """An initialised SoftHSM2 token living under ``directory``."""

    directory: Path
    config: Path
    module: str
    label: str
    so_pin: str
    user_pin: str

    def environ(self) -> dict[str, str]:
        """The environment entries that make SoftHSM2 use this token's configuration."""
        return {"SOFTHSM2_CONF": str(self.config)}


def create_token(
    directory: str | os.PathLike[str],
    *,
    label: str = "kms-iface-test",
    so_pin: str = "5678",
    user_pin: str = "1234",
) -> SoftHsmToken:
    """Initialise a token in the private SoftHSM2 configuration under ``directory`` (written on
    first use; calling again with the same directory adds another token)."""
    util = shutil.which("softhsm2-util")
    if util is None:
        raise InvalidRequestError("softhsm2-util is missing: install Debian's softhsm2 package")
    root = Path(directory).resolve()
    tokens = root / "tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = root / "softhsm2.conf"
    if not config.exists():
        config.write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
            "slots.removable = false\n"
        )
    env = {**os.environ, "SOFTHSM2_CONF": str(config)}
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", user_pin],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return SoftHsmToken(root, config, find_softhsm2_module(), label, so_pin, user_pin)
