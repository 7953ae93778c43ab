"""Compile ``fault_pkcs11.c`` with the system C compiler into a cache directory.

The library is rebuilt only when the source or the project's PKCS#11 header changes; the file is
written under a temporary name and renamed, so concurrent test runs never load a half-written
library.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["SOURCE", "build_fault_module"]

HERE: Final = Path(__file__).resolve().parent
SOURCE: Final = HERE / "fault_pkcs11.c"
HEADER_DIR: Final = HERE.parent.parent / "include"


def build_fault_module(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The path of the compiled module (``libfault_pkcs11-<hash>.so``), built if missing."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update((HEADER_DIR / "kms_pkcs11.h").read_bytes())
    directory = Path(cache_dir or Path(tempfile.gettempdir()) / f"kms-iface-fault-{os.getuid()}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = directory / f"libfault_pkcs11-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc) to build the fault-injecting PKCS#11 module")
    partial = directory / f".{target.name}.{os.getpid()}.tmp"
    subprocess.run(
        [
            *cc.split(),
            "-shared",
            "-fPIC",
            "-O2",
            "-Wall",
            "-Wextra",
            "-fvisibility=hidden",
            f"-I{HEADER_DIR}",
            "-o",
            str(partial),
            str(SOURCE),
            "-ldl",
            "-lpthread",
        ],
        check=True,
    )
    partial.replace(target)
    return target
