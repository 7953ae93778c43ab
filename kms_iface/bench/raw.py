"""Build the raw C loop (``raw_loop.c``, shipped in this package) with the system C compiler.

The binary goes to a per-user cache, ``$XDG_CACHE_HOME/kms-iface/bench/`` (default
``~/.cache``), under a name that hashes the sources and the compiler, so it is built once per
version and compiler and rebuilt when either changes. The compiler is ``$CC``, else ``cc``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kms_iface.bench.protocol import BenchError

HERE: Final = Path(__file__).resolve().parent
SOURCES: Final = ("raw_loop.c", "kms_pkcs11.h")


class NoCompilerError(BenchError):
    """No C compiler on this machine."""


@dataclass(frozen=True)
class RawLoop:
    """The built C loop and the compiler that built it."""

    path: Path
    compiler: str


def find_compiler() -> str:
    """The C compiler's path: ``$CC`` if set, else ``cc`` on PATH."""
    name = os.environ.get("CC") or "cc"
    found = shutil.which(name)
    if found is None:
        raise NoCompilerError(
            f"no C compiler for the raw C loop: {name!r} is not on PATH (install gcc, or set CC)"
        )
    return found


def cache_dir() -> Path:
    """Where built loops are kept: ``$XDG_CACHE_HOME/kms-iface/bench`` (``~/.cache``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "kms-iface" / "bench"


def _compiler_version(compiler: str) -> str:
    done = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    lines = done.stdout.splitlines()
    return lines[0].strip() if lines else os.path.basename(compiler)


def build_raw_loop() -> RawLoop:
    """The raw C loop, compiled now unless the cache already holds this build."""
    compiler = find_compiler()
    version = _compiler_version(compiler)
    digest = hashlib.sha256(f"{compiler}\0{version}\0".encode())
    for name in SOURCES:
        digest.update((HERE / name).read_bytes())
    target = cache_dir() / f"raw_loop-{digest.hexdigest()[:16]}"
    if os.access(target, os.X_OK):
        return RawLoop(target, version)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / "raw_loop"
        command = [compiler, "-O2", "-o", str(built), str(HERE / SOURCES[0]), "-ldl", "-lpthread"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["no output"]
            error = next((line for line in lines if "error" in line), lines[0])
            raise BenchError(f"building the raw C loop with {compiler} failed: {error}")
        os.replace(built, target)
    return RawLoop(target, version)
